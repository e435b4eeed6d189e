"""PrivateV1: an encrypted 1:1 conversation created by an invitation.

Key agreement (from the invitation). Initiator static key IK_i, a fresh ephemeral key EK,
recipient static key IK_r::

    SK   = HKDF(DH(IK_i, IK_r) || DH(EK, IK_r), salt="", info=AGREEMENT || IK_i || IK_r || EK, 32)
    meta = HKDF(SK, salt="", info=META, 160)
         = hint_i2r | hint_r2i | header_i2r | header_r2i | confirm  (32 bytes each)

``key_confirmation = HMAC(confirm, INVITE || IK_i || EK || IK_r || created_at_ms || initial_frame)``
proves the invitation came from the holder of IK_i's private key: the inbox authenticates no one.

Ratchet: the Double Ratchet (Signal specification) with EK as the initiator's first ratchet key
and IK_r as the recipient's, so both can send at once. KDF_RK(rk, dh) = HKDF(dh, salt=rk,
info=RATCHET, 64) -> (rk, ck); KDF_CK(ck) = BLAKE2b-512(CHAIN, key=ck) split -> (ck, mk).
Each message key is used once and then deleted: forward secrecy; every DH step heals a compromise.

On the wire (EncryptedBytes.ratchet): each direction numbers its envelopes with a counter g.
``hint = hex keyed-BLAKE2s(hint key of the direction, g)``: unlinkable without the key, and the
receiver precomputes the hints of the next ``window`` counters, so it matches in O(1) and copes
with loss and reordering within the window. The RatchetHeader is sealed under the direction's
header key with nonce g (so observers cannot link envelopes by ratchet key); the frame is sealed
under the message key. Both bind the hint and salt as associated data.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from google.protobuf.message import DecodeError

from umbra_waku import crypto
from umbra_waku._proto import umbra_envelope_pb2, umbra_frames_pb2
from umbra_waku.conversations.base import ConversationType, FrameError
from umbra_waku.crypto import CryptoFailure
from umbra_waku.envelope import encode_envelope
from umbra_waku.errors import ConversationError, StateError
from umbra_waku.frames import Closed, Content, Frame, Invitation
from umbra_waku.hints import HintIndex, fingerprint, private_fingerprints, private_hint

PRIVATE_TOPIC = "/umbra/1/private/proto"

PRIVATE_V1 = ConversationType(
    name="private/v1",
    content_topics=(PRIVATE_TOPIC,),
    encryption="x25519 key agreement + double ratchet + chacha20-poly1305 (EncryptedBytes.ratchet)",
    frames=("PrivateV1Frame.content", "PrivateV1Frame.close"),
)

AGREEMENT_INFO = b"umbra-waku/private/v1/agreement"
META_INFO = b"umbra-waku/private/v1/meta"
RATCHET_INFO = b"umbra-waku/private/v1/ratchet"
INVITE_LABEL = b"umbra-waku/private/v1/invite"
ID_LABEL = b"umbra-waku/private/v1/id"
CHAIN_LABEL = b"umbra-waku/private/v1/chain"

DEFAULT_WINDOW = 8  # hints precomputed ahead of the next expected counter
MAX_SKIP = 256  # message keys and counters kept for late messages, per conversation
STATE_VERSION = 1

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_KEYS = ("send_hint_key", "recv_hint_key", "send_header_key", "recv_header_key")
_FP = 8  # bytes of one packed hint fingerprint


def conversation_id_for(initiator: bytes, recipient: bytes, ephemeral: bytes) -> str:
    return (
        "/private/v1/" + hashlib.blake2s(ID_LABEL + initiator + recipient + ephemeral).hexdigest()
    )


def _kdf_rk(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    out = crypto.hkdf(dh_out, salt=root_key, info=RATCHET_INFO, length=64)
    return out[:32], out[32:]


def _keypair(private: bytes | crypto.KeyPair) -> crypto.KeyPair:
    return private if isinstance(private, crypto.KeyPair) else crypto.KeyPair.from_private(private)


def _kdf_ck(chain_key: bytes) -> tuple[bytes, bytes]:
    # Keyed BLAKE2b-512 is a PRF (RFC 7693 §2.2); one call gives both outputs, at a quarter of the
    # cost of the two HMAC-SHA256 calls Signal's specification suggests. Runs once per message.
    out = hashlib.blake2b(CHAIN_LABEL, key=chain_key).digest()
    return out[:32], out[32:]


def _nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + _U64.pack(counter)


@dataclass(frozen=True, slots=True)
class Agreement:
    """Everything both sides derive from one invitation."""

    conversation_id: str
    shared_secret: bytes
    hint_i2r: bytes
    hint_r2i: bytes
    header_i2r: bytes
    header_r2i: bytes
    confirm_key: bytes

    @classmethod
    def derive(
        cls,
        dh_static: bytes,
        dh_ephemeral: bytes,
        initiator: bytes,
        recipient: bytes,
        ephemeral: bytes,
    ) -> Agreement:
        sk = crypto.hkdf(
            dh_static + dh_ephemeral,
            salt=b"",
            info=AGREEMENT_INFO + initiator + recipient + ephemeral,
            length=32,
        )
        meta = crypto.hkdf(sk, salt=b"", info=META_INFO, length=160)
        return cls(
            conversation_id_for(initiator, recipient, ephemeral),
            sk,
            meta[0:32],
            meta[32:64],
            meta[64:96],
            meta[96:128],
            meta[128:160],
        )

    def confirmation(self, invite: umbra_frames_pb2.InvitePrivateV1) -> bytes:
        transcript = (
            INVITE_LABEL
            + invite.initiator_static_key
            + invite.initiator_ephemeral_key
            + invite.recipient_static_key
            + _U64.pack(invite.created_at_ms)
            + invite.initial_frame
        )
        return crypto.hmac_sha256(self.confirm_key, transcript)


def encode_content(content: Content) -> bytes:
    return umbra_frames_pb2.ContentFrame(
        domain=content.domain, tag=content.tag, bytes=content.data
    ).SerializeToString()


def decode_content(data: bytes, sent_at_ms: int = 0) -> Content:
    frame = umbra_frames_pb2.ContentFrame()
    try:
        frame.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise FrameError(f"not a ContentFrame: {exc}") from None
    if not frame.domain:
        raise FrameError("ContentFrame.domain is empty")
    return Content(frame.bytes, frame.domain, frame.tag, sent_at_ms)


class PrivateV1:
    """One PrivateV1 conversation: its ratchet, its hint window and its saved form.

    Sans-IO: ``seal`` returns bytes to publish, ``open`` takes received envelope fields. The
    caller persists :meth:`to_state` after every change, before publishing what ``seal`` made
    (a counter must never be used twice).
    """

    kind = PRIVATE_V1
    content_topic = PRIVATE_TOPIC

    # An idle conversation should cost as little memory as possible (there may be 100,000 of them
    # in one process): the six keys fixed for its life share one bytes object, the look-ahead
    # window is packed fingerprints, and `skipped` / `missing` exist only while non-empty.
    __slots__ = (
        "_header_aead_recv",
        "_header_aead_send",
        "_index",
        "_keys",
        "_window",
        "ckr",
        "cks",
        "closed",
        "conversation_id",
        "created_at_ms",
        "dhr",
        "dhs_priv",
        "dhs_pub",
        "initiator",
        "missing",
        "nr",
        "ns",
        "pn",
        "recv_next",
        "root_key",
        "send_counter",
        "skipped",
        "window",
    )

    conversation_id: str
    initiator: bool
    created_at_ms: int
    root_key: bytes
    dhs_priv: bytes
    dhs_pub: bytes
    dhr: bytes
    # local_static || remote_static || send_hint || recv_hint || send_header || recv_header
    _keys: bytes
    # made on first use
    _header_aead_send: ChaCha20Poly1305 | None
    _header_aead_recv: ChaCha20Poly1305 | None

    def __init__(self) -> None:
        self._index: HintIndex[PrivateV1] | None = None
        self.window = DEFAULT_WINDOW
        self.closed = False
        # plain dicts keep insertion order, and cost less than OrderedDicts
        self.skipped: dict[tuple[bytes, int], bytes] | None = None
        # counter -> fingerprint of envelopes skipped over and still expected (late or lost)
        self.missing: dict[int, int] | None = None
        # fingerprints of the hints of counters recv_next, recv_next + 1, ... (the look-ahead
        # window), packed: 8 bytes each (hints.private_fingerprints)
        self._window = b""
        self._header_aead_send = self._header_aead_recv = None
        self.ns = self.nr = self.pn = 0
        self.send_counter = self.recv_next = 0
        self.cks: bytes | None = None
        self.ckr: bytes | None = None

    # ---- creation ----

    @classmethod
    def initiate(
        cls,
        local_private: bytes | crypto.KeyPair,
        remote_static: bytes,
        *,
        created_at_ms: int,
        initial: Content | None = None,
        ephemeral_private: bytes | None = None,
    ) -> tuple[PrivateV1, umbra_frames_pb2.InboxV1Frame]:
        """Start a conversation with ``remote_static``: the conversation and its invitation frame
        (to be sealed to the peer's inbox). ``ephemeral_private`` is for test vectors only."""
        local = _keypair(local_private)
        local_static = local.public
        ephemeral = (
            crypto.KeyPair.generate()
            if ephemeral_private is None
            else crypto.KeyPair.from_private(ephemeral_private)
        )
        ek_priv, ek_pub = ephemeral.private, ephemeral.public
        dh_ephemeral = ephemeral.agree(remote_static)
        agreement = Agreement.derive(
            local.agree(remote_static),
            dh_ephemeral,
            local_static,
            remote_static,
            ek_pub,
        )
        frame = umbra_frames_pb2.InboxV1Frame()
        invite = frame.invite_private_v1
        invite.initiator_static_key = local_static
        invite.initiator_ephemeral_key = ek_pub
        invite.recipient_static_key = remote_static
        invite.created_at_ms = created_at_ms
        if initial is not None:
            invite.initial_frame = encode_content(initial)
        invite.key_confirmation = agreement.confirmation(invite)

        conv = cls()
        conv._init_common(agreement, True, local_static, remote_static, created_at_ms)
        conv.dhs_priv, conv.dhs_pub, conv.dhr = ek_priv, ek_pub, remote_static
        conv.root_key, conv.cks = _kdf_rk(agreement.shared_secret, dh_ephemeral)
        return conv, frame

    @classmethod
    def accept(
        cls,
        local_private: bytes | crypto.KeyPair,
        invite: umbra_frames_pb2.InvitePrivateV1,
        *,
        ratchet_private: bytes | None = None,
    ) -> tuple[PrivateV1, Invitation]:
        """Check an invitation and create the recipient's side; raises FrameError or
        CryptoFailure when it is malformed or forged. ``ratchet_private`` (the recipient's first
        ratchet key) is for test vectors only."""
        local = _keypair(local_private)
        local_static = local.public
        for name in ("initiator_static_key", "initiator_ephemeral_key", "recipient_static_key"):
            if len(getattr(invite, name)) != crypto.KEY_BYTES:
                raise FrameError(f"invitation {name} must be 32 bytes")
        if invite.recipient_static_key != local_static:
            raise FrameError("invitation is addressed to another client")
        if invite.initiator_static_key == local_static:
            raise FrameError("invitation from ourselves")
        remote_static = invite.initiator_static_key
        ek_pub = invite.initiator_ephemeral_key
        dh_ephemeral = local.agree(ek_pub)
        agreement = Agreement.derive(
            local.agree(remote_static),
            dh_ephemeral,
            remote_static,
            local_static,
            ek_pub,
        )
        if not hmac.compare_digest(agreement.confirmation(invite), invite.key_confirmation):
            raise FrameError("invitation key confirmation does not verify (forged invitation)")
        initial = (
            decode_content(invite.initial_frame, invite.created_at_ms)
            if invite.initial_frame
            else None
        )

        conv = cls()
        conv._init_common(agreement, False, local_static, remote_static, invite.created_at_ms)
        conv.dhr = ek_pub
        conv.root_key, conv.ckr = _kdf_rk(agreement.shared_secret, dh_ephemeral)
        ratchet = (
            crypto.KeyPair.generate()
            if ratchet_private is None
            else crypto.KeyPair.from_private(ratchet_private)
        )
        conv.dhs_priv, conv.dhs_pub = ratchet.private, ratchet.public
        conv.root_key, conv.cks = _kdf_rk(conv.root_key, ratchet.agree(ek_pub))
        invitation = Invitation(
            agreement.conversation_id, remote_static.hex(), invite.created_at_ms, initial
        )
        return conv, invitation

    def _init_common(
        self,
        agreement: Agreement,
        initiator: bool,
        local_static: bytes,
        remote_static: bytes,
        created: int,
    ) -> None:
        self.conversation_id = agreement.conversation_id
        self.initiator = initiator
        self.created_at_ms = created
        a = agreement
        if initiator:
            keys = (a.hint_i2r, a.hint_r2i, a.header_i2r, a.header_r2i)
        else:
            keys = (a.hint_r2i, a.hint_i2r, a.header_r2i, a.header_i2r)
        self._keys = b"".join((local_static, remote_static, *keys))

    # the keys fixed for the conversation's life, 32 bytes each, slices of one bytes object

    @property
    def local_static(self) -> bytes:
        return self._keys[0:32]

    @property
    def remote_static(self) -> bytes:
        return self._keys[32:64]

    @property
    def send_hint_key(self) -> bytes:
        return self._keys[64:96]

    @property
    def recv_hint_key(self) -> bytes:
        return self._keys[96:128]

    @property
    def send_header_key(self) -> bytes:
        return self._keys[128:160]

    @property
    def recv_header_key(self) -> bytes:
        return self._keys[160:192]

    def _send_aead(self) -> ChaCha20Poly1305:
        aead = self._header_aead_send
        if aead is None:
            aead = self._header_aead_send = ChaCha20Poly1305(self.send_header_key)
        return aead

    def _recv_aead(self) -> ChaCha20Poly1305:
        aead = self._header_aead_recv
        if aead is None:
            aead = self._header_aead_recv = ChaCha20Poly1305(self.recv_header_key)
        return aead

    @property
    def peer_address(self) -> str:
        return self._keys[32:64].hex()  # remote_static

    # ---- hint window ----

    # The index maps the fingerprint of each expected hint to its conversation only; the
    # conversation finds the counter itself (a scan of its packed window) and checks the whole
    # hint, which keeps an idle conversation small in memory.

    def expected_counters(self) -> list[int]:
        return [*(self.missing or ()), *range(self.recv_next, self.recv_next + self.window)]

    def attach(self, index: HintIndex[PrivateV1]) -> None:
        """Register the hints this conversation expects in ``index``."""
        self._index = index
        hint_key = self.recv_hint_key
        missing = self.missing
        if missing:
            for counter in missing:
                fp = private_fingerprints(hint_key, counter, 1)
                missing[counter] = int.from_bytes(fp, "big")
                index.add_packed(fp, self)
        self._window = private_fingerprints(hint_key, self.recv_next, self.window)
        index.add_packed(self._window, self)

    def detach(self) -> None:
        index, self._index = self._index, None
        if index is not None:
            for fp in (self.missing or {}).values():
                index.remove(fp, self)
            index.remove_packed(self._window, self)

    def counter_of(self, conversation_hint: str, fp: int | None = None) -> int | None:
        """The counter of an expected hint, or None. A fingerprint match is checked against the
        whole hint (one keyed BLAKE2s). ``fp``: the hint's fingerprint, when already known."""
        if fp is None:
            fp = fingerprint(conversation_hint)
            if fp is None:
                return None
        hint_key = self._keys[96:128]  # recv_hint_key, without the property's cost
        window, packed = self._window, fp.to_bytes(_FP, "big")
        position = window.find(packed)
        while position >= 0:
            if position % _FP == 0:
                counter = self.recv_next + position // _FP
                if private_hint(hint_key, counter) == conversation_hint:
                    return counter
            position = window.find(packed, position + 1)
        for counter, expected in (self.missing or {}).items():
            if expected == fp and private_hint(hint_key, counter) == conversation_hint:
                return counter
        return None

    def _consume_counter(self, counter: int) -> None:
        """Move the window past ``counter`` after it was read."""
        index = self._index
        missing = self.missing
        if missing is not None and counter in missing:
            consumed = missing.pop(counter).to_bytes(_FP, "big")
            if not missing:
                self.missing = None
        else:
            start = (counter - self.recv_next) * _FP
            window = self._window
            consumed = window[start : start + _FP]
            if start:
                if missing is None:
                    missing = self.missing = {}
                for offset in range(0, start, _FP):
                    skipped_fp = int.from_bytes(window[offset : offset + _FP], "big")
                    missing[self.recv_next + offset // _FP] = skipped_fp
            window = window[start + _FP :]
            self.recv_next = counter + 1
            first_new = self.recv_next + len(window) // _FP
            new = private_fingerprints(
                self._keys[96:128], first_new, max(0, self.recv_next + self.window - first_new)
            )
            self._window = window + new
            if index is not None:
                index.add_packed(new, self)
            while missing is not None and len(missing) > MAX_SKIP:
                dropped = next(iter(missing))
                dropped_fp = missing.pop(dropped)
                if index is not None:
                    index.remove(dropped_fp, self)
        if index is not None:
            index.remove_packed(consumed, self)

    # ---- sending ----

    def seal(self, frame: umbra_frames_pb2.PrivateV1Frame, *, salt: int) -> tuple[str, bytes]:
        """Encrypt one frame: (hint, envelope bytes). Advances the sending ratchet."""
        if self.cks is None:  # pragma: no cover - both sides have a sending chain from the start
            raise ConversationError("no sending chain")
        counter = self.send_counter
        conversation_hint = private_hint(self.send_hint_key, counter)
        aad = conversation_hint.encode() + _U32.pack(salt)
        header = umbra_frames_pb2.RatchetHeader(
            ratchet_key=self.dhs_pub, previous_chain_length=self.pn, message_number=self.ns
        ).SerializeToString()
        self.cks, message_key = _kdf_ck(self.cks)
        encrypted = umbra_envelope_pb2.EncryptedBytes()
        encrypted.ratchet.header = self._send_aead().encrypt(_nonce(counter), header, aad)
        encrypted.ratchet.ciphertext = crypto.aead_seal(
            message_key, crypto.ZERO_NONCE, frame.SerializeToString(), aad + header
        )
        self.ns += 1
        self.send_counter = counter + 1
        return conversation_hint, encode_envelope(conversation_hint, salt, encrypted)

    # ---- receiving ----

    def open(
        self,
        conversation_hint: str,
        salt: int,
        encrypted: umbra_envelope_pb2.EncryptedBytes,
        counter: int | None = None,
    ) -> Frame:
        """Decrypt an envelope whose hint this conversation expects (``counter``, when the caller
        already found it with :meth:`counter_of`); raises CryptoFailure or FrameError and then
        leaves the state untouched."""
        if counter is None:
            counter = self.counter_of(conversation_hint)
        if counter is None:
            raise FrameError("hint not expected by this conversation")
        if encrypted.WhichOneof("encryption") != "ratchet":
            raise FrameError("PrivateV1 envelopes must use EncryptedBytes.ratchet")
        aad = conversation_hint.encode() + _U32.pack(salt)
        try:
            header_bytes = self._recv_aead().decrypt(_nonce(counter), encrypted.ratchet.header, aad)
        except Exception as exc:
            raise CryptoFailure("header authentication failed") from exc
        header = umbra_frames_pb2.RatchetHeader()
        try:
            header.ParseFromString(header_bytes)
        except (DecodeError, ValueError, RuntimeError):
            raise FrameError("bad ratchet header") from None
        if len(header.ratchet_key) != crypto.KEY_BYTES:
            raise FrameError("ratchet key must be 32 bytes")
        commit, message_key = self._message_key(header)
        plaintext = crypto.aead_open(
            message_key, crypto.ZERO_NONCE, encrypted.ratchet.ciphertext, aad + header_bytes
        )
        frame = _decode_private_frame(plaintext)
        commit()
        self._consume_counter(counter)
        if isinstance(frame, Closed):
            self.closed = True
        return frame

    def _message_key(
        self, header: umbra_frames_pb2.RatchetHeader
    ) -> tuple[Callable[[], None], bytes]:
        """The message key for ``header`` and a function that commits the ratchet changes."""
        dh, n = header.ratchet_key, header.message_number
        skipped_key = None if self.skipped is None else self.skipped.get((dh, n))
        if skipped_key is not None:

            def forget_skipped() -> None:
                if self.skipped is not None:
                    del self.skipped[(dh, n)]
                    if not self.skipped:
                        self.skipped = None

            return forget_skipped, skipped_key

        skipped: list[tuple[tuple[bytes, int], bytes]] = []
        root_key, ckr, nr = self.root_key, self.ckr, self.nr
        dhs_priv, dhs_pub, cks, pn = self.dhs_priv, self.dhs_pub, self.cks, self.pn
        new_ratchet = dh != self.dhr
        if new_ratchet:
            if ckr is not None:
                ckr, nr = self._skip(ckr, nr, header.previous_chain_length, self.dhr, skipped)
            root_key, ckr = _kdf_rk(root_key, crypto.KeyPair.from_private(dhs_priv).agree(dh))
            nr = 0
            pn = self.ns
            ratchet = crypto.KeyPair.generate()
            dhs_priv, dhs_pub = ratchet.private, ratchet.public
            root_key, cks = _kdf_rk(root_key, ratchet.agree(dh))
        if ckr is None:
            raise FrameError("no receiving chain for this ratchet key")
        ckr, nr = self._skip(ckr, nr, n, dh, skipped)
        ckr, message_key = _kdf_ck(ckr)
        nr += 1

        def commit() -> None:
            if skipped:
                stored = self.skipped
                if stored is None:
                    stored = self.skipped = {}
                for key, value in skipped:
                    stored[key] = value
                while len(stored) > MAX_SKIP:
                    del stored[next(iter(stored))]
            self.root_key, self.ckr, self.nr = root_key, ckr, nr
            if new_ratchet:
                self.dhr = dh
                self.dhs_priv, self.dhs_pub, self.cks, self.pn = dhs_priv, dhs_pub, cks, pn
                self.ns = 0

        return commit, message_key

    @staticmethod
    def _skip(
        chain_key: bytes, nr: int, until: int, dh: bytes, out: list[tuple[tuple[bytes, int], bytes]]
    ) -> tuple[bytes, int]:
        if until - nr > MAX_SKIP:
            raise FrameError(f"message number jumps {until - nr} ahead (limit {MAX_SKIP})")
        while nr < until:
            chain_key, message_key = _kdf_ck(chain_key)
            out.append(((dh, nr), message_key))
            nr += 1
        return chain_key, nr

    # ---- persistence ----

    def to_state(self) -> bytes:
        state = umbra_frames_pb2.PrivateV1State(
            version=STATE_VERSION,
            conversation_id=self.conversation_id,
            initiator=self.initiator,
            local_static_public=self.local_static,
            remote_static_public=self.remote_static,
            root_key=self.root_key,
            send_ratchet_private=self.dhs_priv,
            send_ratchet_public=self.dhs_pub,
            remote_ratchet_public=self.dhr,
            send_chain_key=self.cks or b"",
            recv_chain_key=self.ckr or b"",
            send_message_number=self.ns,
            recv_message_number=self.nr,
            previous_send_chain_length=self.pn,
            send_hint_key=self.send_hint_key,
            recv_hint_key=self.recv_hint_key,
            send_header_key=self.send_header_key,
            recv_header_key=self.recv_header_key,
            send_counter=self.send_counter,
            recv_counter_next=self.recv_next,
            recv_counters_missing=list(self.missing or ()),
            created_at_ms=self.created_at_ms,
            closed=self.closed,
        )
        for (dh, n), key in (self.skipped or {}).items():
            state.skipped_keys.add(ratchet_key=dh, message_number=n, message_key=key)
        return state.SerializeToString()

    @classmethod
    def from_state(cls, data: bytes) -> PrivateV1:
        state = umbra_frames_pb2.PrivateV1State()
        try:
            state.ParseFromString(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise StateError(f"unreadable PrivateV1 state: {exc}") from None
        if state.version != STATE_VERSION:
            raise StateError(f"unsupported PrivateV1 state version {state.version}")
        conv = cls()
        conv.conversation_id = state.conversation_id
        conv.initiator = state.initiator
        conv.root_key = state.root_key
        conv.dhs_priv = state.send_ratchet_private
        conv.dhs_pub = state.send_ratchet_public
        conv.dhr = state.remote_ratchet_public
        conv.cks = state.send_chain_key or None
        conv.ckr = state.recv_chain_key or None
        conv.closed = state.closed
        for name, value in (
            ("root_key", conv.root_key),
            ("dhs_priv", conv.dhs_priv),
            ("dhs_pub", conv.dhs_pub),
            ("dhr", conv.dhr),
            ("local_static", state.local_static_public),
            ("remote_static", state.remote_static_public),
        ):
            if len(value) != crypto.KEY_BYTES:
                raise StateError(f"PrivateV1 state: {name} must be 32 bytes")
        for name in ("cks", "ckr"):
            if len(getattr(conv, name) or bytes(32)) != crypto.KEY_BYTES:
                raise StateError(f"PrivateV1 state: {name} must be 32 bytes")
        conv.ns, conv.nr = state.send_message_number, state.recv_message_number
        conv.pn = state.previous_send_chain_length
        keys = (
            state.send_hint_key,
            state.recv_hint_key,
            state.send_header_key,
            state.recv_header_key,
        )
        for name, value in zip(_KEYS, keys, strict=True):
            if len(value) != 32:
                raise StateError(f"PrivateV1 state: {name} must be 32 bytes")
        conv._keys = b"".join((state.local_static_public, state.remote_static_public, *keys))
        conv.send_counter, conv.recv_next = state.send_counter, state.recv_counter_next
        if state.recv_counters_missing:  # fingerprints made by attach()
            conv.missing = dict.fromkeys(state.recv_counters_missing, 0)
        if state.skipped_keys:
            conv.skipped = {
                (item.ratchet_key, item.message_number): item.message_key
                for item in state.skipped_keys
            }
        conv.created_at_ms = state.created_at_ms
        return conv


def content_frame(content: Content, sent_at_ms: int) -> umbra_frames_pb2.PrivateV1Frame:
    frame = umbra_frames_pb2.PrivateV1Frame(sent_at_ms=sent_at_ms)
    frame.content.domain = content.domain
    frame.content.tag = content.tag
    frame.content.bytes = content.data
    return frame


def close_frame(reason: str, sent_at_ms: int) -> umbra_frames_pb2.PrivateV1Frame:
    frame = umbra_frames_pb2.PrivateV1Frame(sent_at_ms=sent_at_ms)
    frame.close.reason = reason
    return frame


def _decode_private_frame(plaintext: bytes) -> Frame:
    frame = umbra_frames_pb2.PrivateV1Frame()
    try:
        frame.ParseFromString(plaintext)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise FrameError(f"not a PrivateV1Frame: {exc}") from None
    kind = frame.WhichOneof("frame_type")
    if kind == "content":
        if not frame.content.domain:
            raise FrameError("ContentFrame.domain is empty")
        return Content(
            frame.content.bytes, frame.content.domain, frame.content.tag, frame.sent_at_ms
        )
    if kind == "close":
        return Closed(frame.close.reason)
    raise FrameError("PrivateV1Frame carries no frame")
