"""Generated protobuf code (scripts/gen-proto.sh). Do not edit; import through umbra_waku."""
