"""The HTML and PDF case report (CTMuscleBoneLib.report, pipeline.write_report).

A full synthetic phantom (femurs, lumbar spine, muscles, calibration phantom) is measured
once at 4 mm; its report must show every result row with the value results.py formats,
every image as a PNG, and render in headless Chromium and convert with pdftoppm. Tests
needing chromium / poppler skip when the tool is missing, unless CTMB_REQUIRE_TOOLS=1
(CI), where they fail.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pytest
from CTMuscleBoneLib import pipeline
from CTMuscleBoneLib.deidentify import REMOVED, deidentify
from CTMuscleBoneLib.dxa import DXAConversionModel, SiteLine
from CTMuscleBoneLib.errors import InputError
from CTMuscleBoneLib.image import CTImage
from CTMuscleBoneLib.phantoms import PhantomSpec, make_phantom
from CTMuscleBoneLib.results import Provenance

CHROMIUM = "/usr/bin/chromium"
#: Per-level trabecular vBMD of the phantom, mg/cm3 (L4 below the ACR 80 mg/cm3 line).
LEVEL_BMD = {"L1": 95.0, "L2": 110.0, "L3": 130.0, "L4": 70.0, "L5": 100.0}
#: The identity line declared validated (as a site's fitted model would be).
VALIDATED_IDENTITY = DXAConversionModel(
    "validated-identity", {s: SiteLine(1.0, 0.0) for s in ("total_hip", "femoral_neck",
                                                          "lumbar")}, validated=True)


def _tool(name: str) -> str:
    """Path of an external tool; skip without it, unless CTMB_REQUIRE_TOOLS=1 (fail)."""
    path = shutil.which(name) or (name if os.path.isfile(name) else None)
    if path is None:
        if os.environ.get("CTMB_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{name} is required (CTMB_REQUIRE_TOOLS=1) but not installed")
        pytest.skip(f"{name} not installed")
    return path


class _Page(HTMLParser):
    """Value cells, figures (data-key -> img src or absent text) and external refs."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], list[str]] = {}
        self.images: dict[str, dict[str, str]] = {}
        self.absent: dict[str, str] = {}
        self.external: list[str] = []
        self._cell: tuple[str, str] | None = None
        self._figure: str | None = None
        self._absent = False
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith("data:"):
                self.external.append(a[key])
        if tag == "td" and "data-structure" in a:
            self._cell = (a["data-structure"], a["data-quantity"])
            self._text = []
        if tag == "figure":
            self._figure = a["data-key"]
        if tag == "img" and self._figure:
            self.images[self._figure] = a
        if tag == "div" and a.get("class") == "absent":
            self._absent, self._text = True, []

    def handle_data(self, data):
        if self._cell is not None or self._absent:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.setdefault(self._cell, []).append("".join(self._text))
            self._cell = None
        if tag == "div" and self._absent:
            self.absent[self._figure or ""] = "".join(self._text)
            self._absent = False
        if tag == "figure":
            self._figure = None


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


@pytest.fixture(scope="module")
def case():
    ph = make_phantom(PhantomSpec(region="full", spacing_mm=4.0, seed=3, calibration=True,
                                  calibration_definition="B-MAS200",
                                  vertebra_bmd_mg_cm3=LEVEL_BMD))
    # a validated CT-to-DXA model, so that the femoral T-scores exist and are plotted
    # (the shipped identity model gives none: test_no_score_without_a_validated_model)
    options = pipeline.MeasureOptions(sex="F", height_m=1.60, age_years=70,
                                      phantom="B-MAS200", dxa_model=VALIDATED_IDENTITY)
    results = pipeline.measure(ph.ct, ph.labels, options)
    return ph, results


@pytest.fixture(scope="module")
def small():
    """Thigh muscles only (no femur, no vertebra), 6 mm: a quick case."""
    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, bones=(), vessels=False))
    results = pipeline.measure(ph.ct, ph.labels,
                               pipeline.MeasureOptions(sex="F", height_m=1.6, age_years=70))
    return ph, results


@pytest.fixture(scope="module")
def report(case, tmp_path_factory):
    ph, results = case
    out = tmp_path_factory.mktemp("report")
    paths = pipeline.write_report(results, ph.ct, ph.labels, out)
    return paths, _parse(paths["html"].read_text(encoding="utf-8"))


# --- content -------------------------------------------------------------------------
def test_every_result_row_is_shown_once_with_its_formatted_value(case, report):
    _, results = case
    _, page = report
    assert set(page.cells) == {(r.structure, r.quantity) for r in results.rows}
    for r in results.rows:
        shown = page.cells[(r.structure, r.quantity)]
        assert shown == [r.display_value() or "n/a"], (r.structure, r.quantity)


def test_values_agree_with_the_phantom_truth(case, report):
    """The numbers shown are the measured ones, and those match the phantom's design."""
    _, page = report
    for level, bmd in LEVEL_BMD.items():
        shown = float(page.cells[(f"vertebrae_{level}", "trabecular_vbmd")][0])
        assert shown == pytest.approx(bmd, abs=12.0)  # 4 mm voxels: partial volume
    assert page.cells[("lumbar_L1_L2", "acr_category")] == ["low bone mass (osteopenia)"]


def test_t_scores_shown_through_a_validated_model(case, report):
    """With a validated CT-to-DXA model the T-score cells are the measured numbers."""
    _, results = case
    _, page = report
    for side in ("left", "right"):
        for site in ("total_hip", "femoral_neck"):
            abmd = results.get(f"femur_{side}", f"abmd_{site}").value
            t = results.get(f"femur_{side}", f"t_score_{site}")
            mean, sd = {"total_hip": (0.942, 0.122), "femoral_neck": (0.858, 0.120)}[site]
            assert t.value == pytest.approx((abmd - mean) / sd, abs=1e-9)
            assert page.cells[(f"femur_{side}", f"t_score_{site}")] == [t.display_value()]


def test_no_score_without_a_validated_model(tmp_path):
    """Project rule: with the shipped (unvalidated identity) CT-to-DXA model no T-score,
    Z-score or %YAM is shown as a number, in the tables or the score plot: the cells are
    'n/a' with the reason below the table, the category is 'indeterminate' and the plot
    is replaced by the reason."""
    ph = make_phantom(PhantomSpec(region="hip", spacing_mm=4.0, seed=3, calibration=True,
                                  calibration_definition="B-MAS200"))
    results = pipeline.measure(ph.ct, ph.labels, pipeline.MeasureOptions(
        sex="F", height_m=1.60, age_years=70, phantom="B-MAS200"))
    paths = pipeline.write_report(results, ph.ct, ph.labels, tmp_path, formats=("html",))
    html = paths["html"].read_text(encoding="utf-8")
    page = _parse(html)
    for side in ("left", "right"):
        assert page.cells[(f"femur_{side}", "abmd_dxa_total_hip")][0] not in ("", "n/a")
        for site in ("total_hip", "femoral_neck"):
            for q in ("t_score", "z_score", "percent_yam"):
                assert page.cells[(f"femur_{side}", f"{q}_{site}")] == ["n/a"], (side, q)
            assert page.cells[(f"femur_{side}", f"who_category_{site}")] == ["indeterminate"]
    assert "plot_score" not in page.images
    why = page.absent["plot_score"]
    assert "T-score not measurable" in why and "not on the DXA scale" in why
    assert "fit-dxa" in why and "--dxa-model" in why
    # the reason below each femur's table
    for side in ("left", "right"):
        assert (f"Femur ({side}): not measurable (the aBMD is not on the DXA scale"
                in html), side


def test_every_image_is_a_png_inline_and_nothing_is_external(report):
    paths, page = report
    expected = {"femur_right", "femur_left", "spine", "plot_vertebrae", "plot_score",
                "muscles", "plot_smi"}
    assert expected <= set(page.images), set(page.images)
    for key, img in page.images.items():
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64", key
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n", key
        w, h = struct.unpack(">II", png[16:24])
        assert (w, h) == (int(img["width"]), int(img["height"])) and w > 200 and h > 100
    assert page.absent == {}  # femurs, spine, SMI, scores: all there
    assert page.external == []


def test_quality_and_provenance_sections(case, report):
    _, results = case
    paths, _ = report
    html = paths["html"].read_text(encoding="utf-8")
    assert "B-MAS200" in html  # calibration method and its fit
    assert "0.7998" in html or "x HU" in html
    assert "field of view" in html and "contrast" in html and "metal" in html
    assert "unvalidated" in html  # the default ALM and CT-to-DXA models
    assert results.provenance.software in html


def test_absent_structures_are_said_in_place_of_their_images(small, tmp_path):
    ph, results = small
    paths = pipeline.write_report(results, ph.ct, ph.labels, tmp_path, formats=("html",))
    assert set(paths) == {"html"}
    page = _parse(paths["html"].read_text(encoding="utf-8"))
    assert "no femur" in page.absent["femur"]
    assert "no lumbar vertebra" in page.absent["spine"]
    assert "muscles" in page.images  # the muscle slices (their heatmap panels say why)


def test_uncertainty_map_given_is_drawn(small):
    from CTMuscleBoneLib.report.images import muscle_figure

    ph, _ = small
    unc = (np.random.default_rng(0).random(ph.ct.hu.shape) * (ph.labels.array > 0)
           ).astype(np.float32)
    drawn = muscle_figure(ph.ct, ph.labels, unc, "no map")
    absent = muscle_figure(ph.ct, ph.labels, None, "no map")
    assert drawn.png and absent.png and drawn.png != absent.png
    assert drawn.width_px > absent.width_px  # the heatmaps' colour bars


def test_unknown_format_is_refused(case, tmp_path):
    ph, results = case
    with pytest.raises(InputError, match="docx"):
        pipeline.write_report(results, ph.ct, ph.labels, tmp_path, formats=("docx",))
    assert not any(tmp_path.iterdir())


# --- de-identification ----------------------------------------------------------------
def _identified(ph, results):
    meta = replace(ph.ct.metadata, patient_id="PAT-98765", patient_name="Doe^Jane",
                   patient_birth_date="19540312", accession_number="ACC-4711",
                   series_instance_uid="1.2.840.99999.1.2.3",
                   study_date="20250101", source="/data/Doe_Jane/ct")
    ct = CTImage(ph.ct.hu, ph.ct.geometry, meta)
    prov = replace(results.provenance, input_ct="/data/Doe_Jane/ct.nii.gz",
                   input_ct_sha256="ab" * 32, notes=list(results.provenance.notes))
    res = replace(results, provenance=prov,
                  warnings=[*results.warnings, "series 1.2.840.99999.1.2.3 chosen for Doe^Jane"])
    return ct, res


SECRETS = ("PAT-98765", "Doe^Jane", "Doe_Jane", "19540312", "1954-03-12", "ACC-4711",
           "1.2.840.99999.1.2.3")


def test_deidentify_removes_identifiers_and_keeps_patient_facts(case):
    ph, results = case
    ct, res = _identified(ph, results)
    before = json.dumps(res.to_dict())
    clean = deidentify(res, ct.metadata)
    text = json.dumps(clean.to_dict())
    for s in SECRETS:
        assert s.lower() not in text.lower(), s
    assert REMOVED in text
    assert clean.provenance.patient == res.provenance.patient  # sex, age, height kept
    assert clean.provenance.input_ct_sha256 == "ab" * 32
    assert [r.value for r in clean.rows] == [r.value for r in res.rows]
    assert json.dumps(res.to_dict()) == before  # the input is not modified


def test_deidentify_metadata_keeps_the_patient_facts(case):
    from CTMuscleBoneLib.deidentify import deidentify_metadata, identifiers

    ph, results = case
    ct, _ = _identified(ph, results)
    clean = deidentify_metadata(ct.metadata)
    assert identifiers(clean) == {}
    assert identifiers(ct.metadata)["patient_id"] == "PAT-98765"
    for name in ("patient_sex", "patient_age_years", "patient_height_m", "patient_weight_kg",
                 "kvp", "manufacturer"):
        assert getattr(clean, name) == getattr(ct.metadata, name), name


def test_report_header_shows_identifiers_unless_deidentified(small, tmp_path):
    ph, results = small
    ct, res = _identified(ph, results)
    shown = pipeline.write_report(res, ct, ph.labels, tmp_path / "a", formats=("html",))
    html = shown["html"].read_text(encoding="utf-8")
    assert "PAT-98765" in html and "Doe^Jane" in html and "1954-03-12" in html
    paths = pipeline.write_report(res, ct, ph.labels, tmp_path / "b", deidentify=True)
    html = paths["html"].read_text(encoding="utf-8")
    for s in SECRETS:
        assert s not in html, s
    assert "de-identified" in html
    pdftotext = _tool("pdftotext")
    text = subprocess.run([pdftotext, str(paths["pdf"]), "-"], capture_output=True,
                          text=True, check=True).stdout
    for s in SECRETS:
        assert s not in text, s
    assert "70 years" in text  # age kept


# --- renderers and tools ---------------------------------------------------------------
def test_pdf_text_shows_the_same_values(case, report):
    _, results = case
    paths, _ = report
    pdftotext = _tool("pdftotext")
    text = subprocess.run([pdftotext, "-layout", str(paths["pdf"]), "-"], capture_output=True,
                          text=True, check=True).stdout
    words = text.split()
    for r in results.rows:
        if r.structure.startswith(("femur_", "vertebrae_", "lumbar_")) and isinstance(
                r.value, float):
            assert r.display_value() in words, (r.structure, r.quantity, r.display_value())
    for title in ("Proximal femur", "Lumbar spine", "Muscles", "Quality", "Provenance"):
        assert title in text


def test_pdf_holds_every_image_and_converts_to_png(report, tmp_path):
    paths, page = report
    pdfimages = _tool("pdfimages")
    listing = subprocess.run([pdfimages, "-list", str(paths["pdf"])], capture_output=True,
                             text=True, check=True).stdout.splitlines()[2:]
    assert len([ln for ln in listing if " image " in ln]) >= len(page.images)
    pdftoppm = _tool("pdftoppm")
    subprocess.run([pdftoppm, "-r", "30", "-png", str(paths["pdf"]), str(tmp_path / "p")],
                   check=True, timeout=120)
    pngs = sorted(tmp_path.glob("p-*.png"))
    assert len(pngs) >= 4
    from PIL import Image

    for p in pngs:
        a = np.asarray(Image.open(p).convert("L"))
        assert a.std() > 5.0, p  # a page with content, not blank


def test_html_renders_in_headless_chromium(report, tmp_path):
    paths, page = report
    chromium = _tool(CHROMIUM)
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
           f"--screenshot={shot}", paths["html"].as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000
    dom = subprocess.run(cmd[:-2] + ["--dump-dom", paths["html"].as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count("data:image/png;base64,") == len(page.images)
    from PIL import Image

    a = np.asarray(Image.open(shot).convert("L"))
    assert a.std() > 5.0  # something was drawn


# --- command line ----------------------------------------------------------------------
def test_cli_measure_report_and_deidentify(tmp_path):
    from CTMuscleBoneLib.cli.cmd_phantom import write_phantom
    from CTMuscleBoneLib.cli.main import main

    ph = make_phantom(PhantomSpec(region="thigh", spacing_mm=6.0, bones=(), vessels=False))
    files = write_phantom(ph, tmp_path / "Doe_Jane")
    out = tmp_path / "out"
    rc = main(["measure", "--ct", str(files["ct"]), "--labels", str(files["labels"]),
               "--sex", "F", "--height", "1.6", "--report", "--deidentify", "--quiet",
               "--out", str(out)])
    assert rc == 0
    names = {p.name for p in out.iterdir()}
    assert {"report.html", "report.pdf", "results.json", "summary.txt"} <= names
    assert not any(p.name.startswith(".out.partial") for p in tmp_path.iterdir())
    for name in ("report.html", "results.json", "summary.txt", "results.csv"):
        assert "Doe_Jane" not in (out / name).read_text(encoding="utf-8", errors="ignore")
    prov = json.loads((out / "results.json").read_text())["provenance"]
    assert prov["input_ct"] == REMOVED and prov["patient"]["sex"] == "F"
    assert isinstance(Provenance(**prov), Provenance)


@pytest.mark.parametrize(("expected_error", "level"), [
    ("", "ok"), ("phantomless calibration: expect +-10 % on this scanner", "info")])
def test_calibration_quality_line_says_when_the_method_is_unvalidated(expected_error, level):
    """A phantom calibration is 'ok'; a phantomless one (an expected error, not validated on
    the scanner) is information, and its stated error is a warning line of its own."""
    from CTMuscleBoneLib.report.build import quality_items
    from CTMuscleBoneLib.results import Provenance, Results

    cal = {"kind": "HU-to-BMD calibration", "method": "phantomless", "material": "K2HPO4",
           "slope_mg_cm3_per_hu": 0.619, "intercept_mg_cm3": 6.7, "n_points": 4,
           "description": "air, fat, blood, muscle", "warnings": [],
           "expected_error": expected_error or None}
    results = Results(rows=[], provenance=Provenance(coefficients=[cal]))
    items = [i for i in quality_items(results, []) if i.topic == "calibration"]
    assert items[0].level == level and "0.6190 x HU" in items[1].text
    unvalidated = [i for i in items if i.text.startswith("unvalidated")]
    if expected_error:
        assert [(i.level, i.text) for i in unvalidated] == [
            ("warning", f"unvalidated: {expected_error}")]
    else:
        assert unvalidated == [] and {i.level for i in items} == {"ok"}
