"""The session's CMS template: each document's container is well-formed DER that an
independent CMS check (pyHanko's) accepts for that document's digest and no other."""

from __future__ import annotations

import hashlib

import pytest
from asn1crypto import algos, cms, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pyhanko.sign.validation.generic_cms import validate_sig_integrity

from agent.capture.cms_template import build_template
from tests.support.softhsm import common_name, self_signed


def _signer() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key, cert = self_signed(common_name("Nguyễn Văn Thử"), 1)
    return key, x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def test_each_container_verifies_for_its_own_document_only() -> None:
    key, cert = _signer()
    template = build_template(
        cert, [], algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"}), 256
    )
    containers = {}
    for doc in (b"first document", b"second document"):
        digest = hashlib.sha256(doc).digest()
        signature = key.sign(
            template.signed_attributes(digest), padding.PKCS1v15(), hashes.SHA256()
        )
        containers[doc] = (digest, cms.ContentInfo.load(template.container(digest, signature)))
    assert containers[b"first document"][1].dump() != containers[b"second document"][1].dump()
    for digest, info in containers.values():
        signed = info["content"]
        assert signed["certificates"][0].chosen.dump() == cert.dump()
        signer = signed["signer_infos"][0]
        attrs = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
        assert set(attrs) == {"content_type", "message_digest", "signing_certificate_v2"}
        assert attrs["message_digest"].native == digest
        ess = attrs["signing_certificate_v2"]["certs"][0]
        assert ess["cert_hash"].native == hashlib.sha256(cert.dump()).digest()
        assert validate_sig_integrity(signer, cert, "data", digest) == (True, True)
    (first, info), (second, _) = containers.values()
    assert validate_sig_integrity(info["content"]["signer_infos"][0], cert, "data", second) != (
        True,
        True,
    )


def test_a_signature_of_another_length_is_refused() -> None:
    _, cert = _signer()
    template = build_template(
        cert, [], algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"}), 256
    )
    with pytest.raises(ValueError, match="another length"):
        template.container(bytes(32), bytes(255))
    with pytest.raises(ValueError, match="32 bytes"):
        template.signed_attributes(bytes(20))
