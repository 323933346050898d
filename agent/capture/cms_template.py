"""The CMS container of a certified copy's signature, laid out once per session.

Every PAdES-B-B signature a session makes differs from the last in two places
only: the document's digest (inside the signed attributes) and the token's
signature value. The rest (signer's certificate, chain, signing-certificate-v2
attribute, algorithms) is the session's. So the container is encoded once, with
random placeholders of the right lengths, and each document's is those bytes
with the two placeholders replaced: the same DER that pyHanko's encoder
produces (content-type, message-digest, signing-certificate-v2; no
signing-time, as PAdES asks), at a fraction of its cost (asn1crypto building
and encoding the structure took two thirds of the time to sign a short copy).

Pure: certificates and algorithms in, bytes out.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from asn1crypto import algos, cms, tsp, x509

DIGEST_SIZE = 32  # SHA-256


@dataclass(frozen=True)
class CmsTemplate:
    """A session's container: ``der`` with placeholders at the offsets given."""

    der: bytes
    digest_at: int  # message-digest value in ``der``
    signature_at: int  # signature value in ``der``
    signature_len: int
    attrs_start: int  # the signed attributes ([0] IMPLICIT SET) in ``der``
    attrs_end: int

    def signed_attributes(self, digest: bytes) -> bytes:
        """What the token signs: the signed attributes as a DER SET with ``digest``."""
        if len(digest) != DIGEST_SIZE:
            raise ValueError("a SHA-256 digest is 32 bytes")
        der = _put(self.der, self.digest_at, digest)
        return b"\x31" + der[self.attrs_start + 1 : self.attrs_end]

    def container(self, digest: bytes, signature: bytes) -> bytes:
        """The ContentInfo (SignedData) for one document."""
        if len(signature) != self.signature_len:
            raise ValueError("a signature of another length needs its own template")
        return _put(_put(self.der, self.digest_at, digest), self.signature_at, signature)


def _put(der: bytes, at: int, value: bytes) -> bytes:
    return der[:at] + value + der[at + len(value) :]


def signing_certificate_v2(cert: x509.Certificate) -> tsp.SigningCertificateV2:
    """ESS signing-certificate-v2 (RFC 5035): the signer's certificate by its SHA-256
    hash, issuer and serial number, as PAdES baseline requires."""
    return tsp.SigningCertificateV2(
        {
            "certs": [
                {
                    "hash_algorithm": {"algorithm": "sha256"},
                    "cert_hash": hashlib.sha256(cert.dump()).digest(),
                    "issuer_serial": {
                        "issuer": [x509.GeneralName({"directory_name": cert.issuer})],
                        "serial_number": cert.serial_number,
                    },
                }
            ]
        }
    )


def build_template(
    cert: x509.Certificate,
    others: list[x509.Certificate],
    signature_algorithm: algos.SignedDigestAlgorithm,
    signature_len: int,
) -> CmsTemplate:
    """The container for ``cert``'s signatures of ``signature_len`` bytes, carrying
    ``cert`` and ``others`` (the chain below the root)."""
    digest_mark = secrets.token_bytes(DIGEST_SIZE)
    signature_mark = secrets.token_bytes(signature_len)
    attrs = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "message_digest", "values": [digest_mark]}),
            cms.CMSAttribute(
                {"type": "signing_certificate_v2", "values": [signing_certificate_v2(cert)]}
            ),
        ]
    )
    signer = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                        {"issuer": cert.issuer, "serial_number": cert.serial_number}
                    )
                }
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
            "signature_algorithm": signature_algorithm,
            "signed_attrs": attrs,
            "signature": signature_mark,
        }
    )
    certs = [cert, *(c for c in others if c.dump() != cert.dump())]
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": cms.DigestAlgorithms([{"algorithm": "sha256"}]),
            "encap_content_info": {"content_type": "data"},
            "certificates": [cms.CertificateChoices({"certificate": c}) for c in certs],
            "signer_infos": [signer],
        }
    )
    der = cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    attrs_der = signer["signed_attrs"].dump()  # [0] IMPLICIT, as it sits in the container
    attrs_at = _only(der, attrs_der)
    return CmsTemplate(
        der=der,
        digest_at=_only(der, digest_mark),
        signature_at=_only(der, signature_mark),
        signature_len=signature_len,
        attrs_start=attrs_at,
        attrs_end=attrs_at + len(attrs_der),
    )


def _only(der: bytes, mark: bytes) -> int:
    at = der.find(mark)
    if at < 0 or der.find(mark, at + 1) >= 0:
        raise ValueError("a placeholder is not in the container exactly once")
    return at
