"""docs/crd-reference.md is what `make docs` makes from the CRD."""

from __future__ import annotations

from iir_dev import crd_docs


def test_crd_reference_is_up_to_date() -> None:
    assert crd_docs.OUT.read_text() == crd_docs.render(), "docs/crd-reference.md is out of date: run `make docs`"


def test_reference_documents_fields_and_rules() -> None:
    text = crd_docs.render()
    for needle in (
        "`spec.source.huggingFace.id`",
        "`spec.gpusPerReplica`",
        "`status.phase`",
        "exactly one of huggingFace, pvc, hostPath, uri",
        "must not exceed spec.gpusPerReplica",
    ):
        assert needle in text
