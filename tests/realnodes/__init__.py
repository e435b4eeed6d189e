"""Integration tests against real Waku nodes: go-waku (scripts/build-gowaku.sh) and js-waku
(tools/jswaku-peer). See conftest.py for the fixtures and harness.py for how nodes run."""
