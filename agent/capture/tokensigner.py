"""The officer's token as a signer of certified copies.

``TemplateSigner`` is pyHanko's PKCS#11 signer whose PAdES-B-B containers come from
the session's template (``agent.capture.cms_template``); ``cms_now`` gives a
document's container straight from the token, without pyHanko's event loop and
thread hop, and checks the token's signature against the signer's certificate
before it is used (a key label naming a key that is not the certificate's).
"""

from __future__ import annotations

import asyncio
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.sign.pkcs11 import PKCS11Signer

from agent.capture.certifier import SigningError
from agent.capture.cms_template import CmsTemplate, build_template

NOT_THE_CERTIFICATES_KEY = SigningError(
    "chữ ký vừa tạo không kiểm tra được / the signature just made does not verify"
    " against the document",
    "check that [sign] key names the private key of the signer's certificate",
)


class TemplateSigner(PKCS11Signer):
    """pyHanko's PKCS#11 signer, whose PAdES-B-B containers are the session's template
    (``agent.capture.cms_template``) with the document's digest and the token's
    signature put in; anything else (a timestamp, a dry run) goes pyHanko's way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._templates: dict[int, CmsTemplate] = {}
        self._public: Any = None

    def template(self, signature_len: int) -> CmsTemplate:
        t = self._templates.get(signature_len)
        if t is None:
            others = [c for c in self.cert_registry if c.self_signed == "no"]
            mechanism = self.get_signature_mechanism_for_digest("sha256")
            t = build_template(self.signing_cert, others, mechanism, signature_len)
            self._templates[signature_len] = t
        return t

    def expected_signature_len(self) -> int:
        key = self.signing_cert.public_key
        return (int(key.bit_size) + 7) // 8 if key.algorithm == "rsa" else 72

    async def async_sign(
        self,
        data_digest: bytes,
        digest_algorithm: str,
        dry_run: bool = False,
        use_pades: bool = False,
        timestamper: Any = None,
        signed_attr_settings: Any = None,
        is_pdf_sig: bool = True,
        encap_content_info: Any = None,
    ) -> cms.ContentInfo:
        # signing time is left out under PAdES (the /M entry carries it): any other
        # attribute asked for is not in the template
        extra = signed_attr_settings is not None and (
            signed_attr_settings.cades_signed_attrs is not None
            or getattr(signed_attr_settings, "adobe_revinfo_attr", None) is not None
        )
        plain = not (dry_run or timestamper or encap_content_info or extra)
        if not (plain and use_pades and is_pdf_sig and digest_algorithm.lower() == "sha256"):
            return await super().async_sign(
                data_digest,
                digest_algorithm,
                dry_run=dry_run,
                use_pades=use_pades,
                timestamper=timestamper,
                signed_attr_settings=signed_attr_settings,
                is_pdf_sig=is_pdf_sig,
                encap_content_info=encap_content_info,
            )
        first = self.template(self.expected_signature_len())
        signature = await self.async_sign_raw(first.signed_attributes(data_digest), "sha256")
        der = self.template(len(signature)).container(data_digest, signature)
        return cms.ContentInfo.load(der)

    def cms_now(self, digest: bytes) -> bytes:
        """The PAdES-B-B container (DER) for a document whose signed bytes hash to
        ``digest``; ``SigningError`` when the token's signature does not verify."""
        if self._key_handle is None:
            asyncio.run(self.ensure_objects_loaded())  # type: ignore[no-untyped-call]
        key = self._key_handle
        assert key is not None  # loaded above
        first = self.template(self.expected_signature_len())
        attrs = first.signed_attributes(digest)
        spec = self._select_pkcs11_signing_params("sha256", sign_kwargs=self.sign_kwargs(attrs))
        data = spec.pre_sign_transform(attrs) if spec.pre_sign_transform else attrs
        signature = key.sign(data, **spec.sign_kwargs)
        if spec.post_sign_transform is not None:
            signature = spec.post_sign_transform(signature)
        verify(self._public_key(), bytes(signature), attrs)
        return self.template(len(signature)).container(digest, bytes(signature))

    def _public_key(self) -> Any:
        if self._public is None:
            self._public = x509.load_der_x509_certificate(self.signing_cert.dump()).public_key()
        return self._public


def verify(key: Any, signature: bytes, data: bytes) -> None:
    """``SigningError`` unless ``signature`` is ``key``'s SHA-256 signature of ``data``
    (RSA PKCS#1 v1.5, or ECDSA in DER: the mechanisms pyHanko asks the token for)."""
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))  # DER: pyHanko's transform
        else:
            raise InvalidSignature
    except (InvalidSignature, ValueError):
        raise NOT_THE_CERTIFICATES_KEY from None
