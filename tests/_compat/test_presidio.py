"""Canary for ``capsem_proxyd/_compat/presidio.py``: Presidio's spaCy engine without its download, and its
e-mail recognizer without the network.

``NoDownloadSpacyNlpEngine`` overrides Presidio's private static method
``SpacyNlpEngine._download_spacy_model_if_needed``, which ``load`` calls for
each model; ``OfflineEmailRecognizer`` replaces ``EmailRecognizer.validate_result``,
the one place the recognizer reads tldextract's module-level (network-fetching)
extractor. Presidio ships every change as a patch release: the pin is exact.
"""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("presidio_analyzer", reason="the 'pii' extra is not installed")

import spacy.cli  # noqa: E402
from presidio_analyzer.nlp_engine import SpacyNlpEngine  # noqa: E402
from presidio_analyzer.predefined_recognizers import EmailRecognizer  # noqa: E402

from capsem_proxyd._compat.presidio import NoDownloadSpacyNlpEngine, OfflineEmailRecognizer  # noqa: E402
from tests._compat.pins import assert_exact  # noqa: E402


def test_presidio_is_pinned_exactly_to_the_release_installed() -> None:
    assert str(assert_exact("presidio-analyzer")) == "2.2.366"


def test_the_private_download_step_is_still_a_static_method_that_load_calls_per_model() -> None:
    download = vars(SpacyNlpEngine)["_download_spacy_model_if_needed"]
    assert isinstance(download, staticmethod)
    assert list(inspect.signature(download.__func__).parameters) == ["model_name"]
    assert 'self._download_spacy_model_if_needed(model["model_name"])' in inspect.getsource(SpacyNlpEngine.load)
    assert isinstance(vars(NoDownloadSpacyNlpEngine)["_download_spacy_model_if_needed"], staticmethod)


def test_a_missing_model_fails_to_load_instead_of_being_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    def download(*args: object, **kwargs: object) -> None:
        raise AssertionError("Presidio tried to download a spaCy model")

    monkeypatch.setattr(spacy.cli, "download", download)  # Presidio's way out to the network, closed
    engine = NoDownloadSpacyNlpEngine(models=[{"lang_code": "en", "model_name": "capsem_no_such_model"}])
    with pytest.raises(ValueError, match="spaCy model 'capsem_no_such_model' is not installed"):
        engine.load()


def test_validate_result_is_where_the_e_mail_recognizer_reads_tldextract() -> None:
    source = inspect.getsource(inspect.getmodule(EmailRecognizer))  # type: ignore[arg-type]
    assert source.count("tldextract.") == 1 and "tldextract.extract(pattern_text)" in inspect.getsource(
        EmailRecognizer.validate_result)
    assert list(inspect.signature(EmailRecognizer.validate_result).parameters) == ["self", "pattern_text"]
    recognizer = OfflineEmailRecognizer(supported_language="en")
    assert "offline_extract" not in vars(EmailRecognizer(supported_language="en"))  # ours collides with nothing
    assert recognizer.validate_result("someone@example.com") and not recognizer.validate_result("someone@example")
