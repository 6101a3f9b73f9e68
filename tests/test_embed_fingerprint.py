"""The embedding fingerprint follows the one redaction rule (lovr_hf.redact.is_secret_key): an option that
changes the embedding (``keyframes``, whose name merely contains "key") is part of it, a credential
(``api_key``) never is, not even as a hash input that would differ between two keys."""

from __future__ import annotations

import json

from lovr_hf.evaluation.embed import TextEmbedStage
from lovr_hf.evaluation.models import EmbedConfig, model_payload


def _fingerprint(**options) -> str:
    return TextEmbedStage(EmbedConfig(model="dummy", backend_options=options), "clip_caption", "dummy").fingerprint()


def test_keyframes_changes_the_fingerprint_and_api_key_leaves_no_trace() -> None:
    assert _fingerprint(keyframes=4) != _fingerprint(keyframes=8) != _fingerprint()
    secret = "sk-" + "x" * 24
    assert _fingerprint(api_key=secret) == _fingerprint(api_key="sk-" + "y" * 24) == _fingerprint()
    payload = json.dumps(model_payload(EmbedConfig(model="dummy", backend_options={"api_key": secret, "keyframes": 4})))
    assert secret not in payload and "api_key" not in payload and '"keyframes": 4' in payload
