"""Module logic: run the worker, turn its outputs into nodes, measure, re-measure, export.

Knows no widget: the panel (``widget.py``) and the self-test call these methods; every
measurement is a call into :mod:`CTMuscleBoneLib.pipeline`, every node conversion one
into :mod:`CTMuscleBoneSlicer.nodes`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .parameters import CTMuscleBoneParameters
from .process import ProcessRunner, python_executable, worker_script

RESULTS_TABLE_NAME = "CTMuscleBone results"
#: Tag on nodes this module created (so a re-run replaces them and nothing else).
CREATED_BY_ATTRIBUTE = "CTMuscleBone.createdBy"
#: Tag on nodes this module created: the ID of the input volume they belong to (a new
#: analysis of that volume replaces them; those of other volumes are kept).
CREATED_FOR_ATTRIBUTE = "CTMuscleBone.inputVolumeID"


@dataclass(frozen=True)
class SegmentationJob:
    """What a started segmentation belongs to (recorded by :meth:`AnalysisLogic.prepare_job`).

    Attributes
    ----------
    volume_node_id : str
        MRML ID of the CT volume segmented; the results go back onto this node only.
    volume_name : str
        Its name when the job started (for messages).
    params : CTMuscleBoneParameters
        A copy of the settings at the start (later GUI changes do not reach it).
    geometry : Geometry
        Voxel grid (LPS mm) of the CT written for the worker (``ct_path``).
    ct_path : Path
        The CT file the worker reads (``ct.nrrd`` in the work folder).
    """

    volume_node_id: str
    volume_name: str
    params: CTMuscleBoneParameters
    geometry: Any
    ct_path: Path


@dataclass
class CaseState:
    """What one analysis of one CT produced (nodes and core objects)."""

    volume_node: Any
    ct: Any  # CTMuscleBoneLib.image.CTImage
    segmentation_node: Any = None
    labels: Any = None  # LabelMap measured last
    results: Any = None  # Results shown in the table
    review: list[dict] = field(default_factory=list)
    heatmap_nodes: dict[str, Any] = field(default_factory=dict)
    table_node: Any = None
    tracker: Any = None  # nodes.SegmentEditTracker
    changed_rows: set = field(default_factory=set)
    heatmap_arrays: dict[str, Any] = field(default_factory=dict)  # map name -> (n0,n1,n2)
    source_image_nodes: list = field(default_factory=list)  # femur views, vertebral ROIs
    synthetic_model: bool = False
    clinical_use_warning: str = ""
    params: CTMuscleBoneParameters | None = None  # settings the segmentation ran with
    n_classes: int = 0  # the model's output channels (heatmap full scale); 0: unknown
    # the segmentation model's provenance entry (Segmentation.provenance_entry), recorded
    # in every measurement of the case: exported results and reports name the model
    model_provenance: dict | None = None


def remeasure_status(re: Any) -> str:
    """The panel's status line after *Update measurements* (a
    :class:`CTMuscleBoneLib.pipeline.Remeasurement` with ``settings_changed``)."""
    edited = sorted(getattr(re, "edited_structures", ()) or ())
    settings = list(getattr(re, "settings_changed", ()) or ())
    n = len(getattr(re, "changed_rows", ()) or ())
    parts = []
    if settings:
        parts.append(f"Measured again with the changed settings ({', '.join(settings)})")
    if edited:
        parts.append("re-measured the edited structures: " + ", ".join(edited))
    if not parts:
        return "No edited structure and no changed setting: nothing to update."
    text = "; ".join(parts)
    return f"{text[0].upper()}{text[1:]} ({n} row{'s' if n != 1 else ''} changed)."


class AnalysisLogic:
    """Stateful logic of the panel (one case at a time)."""

    def __init__(self) -> None:
        self.runner: ProcessRunner | None = None
        self.work_dir: Path | None = None
        self.case: CaseState | None = None
        #: The segmentation started last (None when none is pending).
        self.job: SegmentationJob | None = None
        #: Why the last export wrote no report ('' when it did).
        self.export_note = ""

    # -- worker -----------------------------------------------------------------------
    @staticmethod
    def write_volume(volume_node: Any, path: Path) -> Path:
        """Write ``volume_node`` to an uncompressed NRRD for the worker.

        Storage-node pattern of SlicerMONAIAuto3DSeg ``MONAIAuto3DSeg.py`` (``process``:
        AddNewNodeByClass vtkMRMLVolumeArchetypeStorageNode, SetFileName, UseCompressionOff,
        WriteData, RemoveNode): the scene is left unchanged.
        """
        import slicer

        storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        try:
            storage.SetFileName(str(path))
            storage.UseCompressionOff()
            if not storage.WriteData(volume_node):
                raise OSError(f"Could not write the CT to {path}")
        finally:
            slicer.mrmlScene.RemoveNode(storage)
        return path

    @staticmethod
    def worker_command(ct_path: Path, out_dir: Path, params: CTMuscleBoneParameters,
                       seed: int | None = None) -> list[str]:
        """Command line of the worker for these settings (:meth:`to_segment_options`)."""
        options = params.to_segment_options(seed)
        cmd = [python_executable(), str(worker_script()), "--ct", str(ct_path),
               "--out", str(out_dir), "--device", options.device]
        if options.model:
            cmd += ["--model", options.model]
        if options.samples:
            cmd += ["--samples", str(options.samples)]
        if options.seed is not None:
            cmd += ["--seed", str(options.seed)]
        return cmd

    def prepare_job(self, volume_node: Any, params: CTMuscleBoneParameters,
                    work_dir: Path | None = None) -> SegmentationJob:
        """Write the CT for the worker and record what the results will belong to.

        The volume node's ID, a copy of ``params`` and the grid of the CT written are kept
        in :attr:`job`: :meth:`import_segmentation` puts the results on that node, with
        those settings, whatever the panel shows by then.
        """
        from . import nodes

        if self.runner is not None and self.runner.running:
            raise RuntimeError("A segmentation is already running.")
        geometry = nodes.geometry_from_volume_node(volume_node)
        self.cleanup_work_dir()
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="CTMuscleBone-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ct_path = self.write_volume(volume_node, self.work_dir / "ct.nrrd")
        self.job = SegmentationJob(volume_node_id=volume_node.GetID(),
                                   volume_name=volume_node.GetName() or volume_node.GetID(),
                                   params=dataclasses.replace(params), geometry=geometry,
                                   ct_path=ct_path)
        return self.job

    def start_segmentation(self, volume_node: Any, params: CTMuscleBoneParameters,
                           work_dir: Path | None = None) -> ProcessRunner:
        """Write the CT (:meth:`prepare_job`) and start the worker; poll the returned runner
        for events.

        Nothing is added to the scene until :meth:`import_segmentation`, so a cancel leaves
        the scene as it was.
        """
        job = self.prepare_job(volume_node, params, work_dir)
        ct_path = job.ct_path
        params = job.params
        env = None
        try:
            import slicer

            # the environment launchConsoleProcess(useStartupEnvironment=True) gives PythonSlicer
            env = slicer.util.startupEnvironment()
        except (ImportError, AttributeError):
            pass
        self.runner = ProcessRunner(self.worker_command(ct_path, self.work_dir / "out", params),
                                    env=env)
        self.runner.start()
        return self.runner

    def cancel(self) -> bool:
        """Kill the worker (within 2 s) and delete its folder; the scene is untouched."""
        ok = True
        if self.runner is not None:
            ok = self.runner.cancel(timeout_s=2.0)
        self.cleanup_work_dir()
        self.job = None
        return ok

    @property
    def running(self) -> bool:
        """True while the worker runs."""
        return self.runner is not None and self.runner.running

    def reset(self) -> None:
        """Forget everything (the scene is closing): cancel a running worker, remove the
        edit tracker's observers, clear :attr:`case` and :attr:`job`. Removes no node."""
        if self.running:
            self.cancel()
        self.cleanup_work_dir()
        self.runner = None
        self.job = None
        self._discard_case()

    def _discard_case(self) -> None:
        """Stop tracking the current case's segmentation and forget the case."""
        case, self.case = self.case, None
        if case is not None and case.tracker is not None:
            case.tracker.remove()
            case.tracker = None

    def cleanup_work_dir(self) -> None:
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None

    # -- results into the scene -----------------------------------------------------
    def job_volume(self, job: SegmentationJob | None = None) -> Any:
        """The volume node a segmentation job ran on, checked to still be that CT.

        Raises
        ------
        InputError
            The node was removed from the scene, or its voxel grid is no longer the one
            written for the worker.
        """
        import slicer
        from CTMuscleBoneLib.errors import InputError

        from . import nodes

        job = job or self.job
        if job is None:
            raise RuntimeError("No segmentation was started.")
        node = slicer.mrmlScene.GetNodeByID(job.volume_node_id)
        if node is None:
            raise InputError(
                f"The CT '{job.volume_name}' that was segmented is no longer in the scene, so "
                "the results have nowhere to go. Load the CT again and press Analyze.")
        if not nodes.geometry_from_volume_node(node).same_grid(job.geometry):
            raise InputError(
                f"The voxel grid of '{node.GetName()}' changed while it was being segmented "
                "(cropped, resampled or replaced), so the results no longer fit it. Press "
                "Analyze again.")
        return node

    def import_segmentation(self, volume_node: Any = None,
                            params: CTMuscleBoneParameters | None = None,
                            out_dir: Path | None = None) -> CaseState:
        """Read the worker's outputs into a segmentation node and heatmap volumes.

        After :meth:`start_segmentation` (or :meth:`prepare_job`) the results go onto the
        volume node and with the settings recorded in :attr:`job` (``volume_node``, when
        given, must be that node; ``params`` is then not used). Without a job both are
        required.

        The new nodes are made first; only when all of them are made are the nodes of an
        earlier analysis of the same volume removed (those of other volumes are kept) and
        :attr:`case` replaced. On failure the new nodes are removed and the earlier case
        stays as it was.

        Raises
        ------
        InputError
            The segmented volume was removed or its grid changed; the volume given is not
            the one segmented; an uncertainty map is not on the CT grid.
        """
        import slicer
        from CTMuscleBoneLib import pipeline
        from CTMuscleBoneLib.errors import InputError
        from CTMuscleBoneLib.io_ct import read_image
        from CTMuscleBoneLib.io_labels import read_labels

        from . import nodes

        job = self.job
        if job is not None:
            node = self.job_volume(job)
            if volume_node is not None and volume_node.GetID() != node.GetID():
                raise InputError(
                    f"These results belong to '{node.GetName()}', the CT that was segmented, "
                    f"not to '{volume_node.GetName()}'.")
            volume_node, params = node, job.params
        elif volume_node is None or params is None:
            raise RuntimeError("No segmentation was started: give the volume and settings.")
        out_dir = Path(out_dir or (self.work_dir / "out"))  # type: ignore[operator]
        summary = json.loads((out_dir / "outputs.json").read_text(encoding="utf-8"))
        files = summary["files"]
        scene = slicer.mrmlScene

        ct = pipeline.check_ct(nodes.ct_from_volume_node(volume_node))  # checked once per case
        labels = read_labels(files["labels"], ct.geometry)
        heatmaps = {}
        for name, path in files.items():
            if name.startswith("uncertainty_"):
                array, geometry = read_image(path)
                if not geometry.same_grid(ct.geometry):
                    raise InputError(
                        f"The uncertainty map '{name}' ({Path(path).name}) is not on the grid "
                        f"of '{volume_node.GetName()}' (shape {geometry.shape} vs "
                        f"{ct.geometry.shape}, or a different spacing, origin or direction); "
                        "it cannot be shown over this CT. Press Analyze again.")
                heatmaps[name[len("uncertainty_"):]] = array
        review = json.loads(Path(files["review_json"]).read_text(encoding="utf-8"))
        before = _node_ids(scene)
        try:
            seg_node = nodes.segmentation_node_from_label_map(
                scene, labels, volume_node, f"{volume_node.GetName()} CTMuscleBone")
            _mark_created(seg_node, volume_node)
            case = CaseState(volume_node=volume_node, ct=ct, segmentation_node=seg_node,
                             labels=labels, review=_review_rows(review),
                             synthetic_model=bool(summary.get("synthetic")),
                             clinical_use_warning=summary.get("clinical_use_warning", ""),
                             params=params, n_classes=int(summary.get("n_classes") or 0),
                             model_provenance=summary.get("model_provenance"))
            case.heatmap_arrays = heatmaps
            case.tracker = nodes.SegmentEditTracker(seg_node)
        except BaseException:
            for node_id in _node_ids(scene) - before:  # whatever the failed attempt added
                node = scene.GetNodeByID(node_id)
                if node is not None and not node.GetSingletonTag():
                    nodes.remove_with_display(scene, node)
            raise
        # all made: replace the earlier analysis of this volume (and only of this volume)
        self._discard_case()
        self.remove_created_nodes(volume_node, keep={seg_node.GetID()})
        self.case = case
        self.job = None  # done: its results are the case now
        if heatmaps:
            self.show_heatmap(next(iter(heatmaps)), params)
        return case

    def show_heatmap(self, map_name: str, params: CTMuscleBoneParameters) -> Any:
        """Show one uncertainty map over the CT (foreground layer) with the panel settings.

        The map's volume node is made on first use and reused when shown again.
        """
        import slicer

        from . import nodes

        case = self._require_case()
        node = case.heatmap_nodes.get(map_name)
        if node is None or slicer.mrmlScene.GetNodeByID(node.GetID()) is None:
            node = nodes.volume_node_from_array(
                slicer.mrmlScene, case.heatmap_arrays[map_name], case.ct.geometry,
                f"CTMuscleBone uncertainty ({map_name})")
            _mark_created(node, case.volume_node)
            case.heatmap_nodes[map_name] = node
        import numpy as np
        from CTMuscleBoneLib.segmentation.uncertainty import two_class_tie_value

        # one scale for every case: full colour where the samples split evenly between
        # two structures; the threshold is a fraction of that scale
        # (outputs of an older worker lack the class count: the map's own maximum)
        if case.n_classes >= 2:
            full = two_class_tie_value(map_name, case.n_classes)
        else:
            top = float(np.nanmax(case.heatmap_arrays[map_name]))
            full = top if np.isfinite(top) and top > 0 else 1.0
        fraction = min(max(params.heatmap_threshold, 0.0), 1.0)
        threshold = fraction * full if fraction > 0 else None
        nodes.show_uncertainty_heatmap(slicer.mrmlScene, node, case.volume_node,
                                       opacity=params.heatmap_opacity, threshold=threshold,
                                       visible=params.heatmap_visible, full_scale=full)
        return node

    def remove_created_nodes(self, volume_node: Any = None, keep: set[str] = frozenset()
                             ) -> None:
        """Remove the nodes this module made (never the user's), with their display nodes.

        Parameters
        ----------
        volume_node : vtkMRMLVolumeNode, optional
            Only the nodes made for this input volume (:data:`CREATED_FOR_ATTRIBUTE`);
            None: those of every volume.
        keep : set of str
            Node IDs not to remove.
        """
        import slicer

        from . import nodes

        scene = slicer.mrmlScene
        volume_id = volume_node.GetID() if volume_node is not None else None
        for node in _nodes_of_scene(scene):
            if node.GetAttribute(CREATED_BY_ATTRIBUTE) != "CTMuscleBone" or node.GetID() in keep:
                continue
            created_for = node.GetAttribute(CREATED_FOR_ATTRIBUTE)
            # a node of an older version of this module records no volume: it is replaced,
            # as that version replaced every node it made
            if volume_id is not None and created_for is not None and created_for != volume_id:
                continue
            if scene.GetNodeByID(node.GetID()) is not None:
                nodes.remove_with_display(scene, node)

    # -- measurements ---------------------------------------------------------------
    def measure(self, params: CTMuscleBoneParameters) -> Any:
        """Measure the current segmentation through the core and fill the table."""
        from CTMuscleBoneLib import pipeline

        from . import nodes

        case = self._require_case()
        labels = nodes.label_map_from_segmentation_node(case.segmentation_node, case.volume_node)
        case.labels = labels
        case.results = pipeline.measure(case.ct, labels, params.to_measure_options(),
                                        provenance=self._model_provenance(case))
        case.changed_rows = set()
        self._show_results()
        if case.tracker is not None:
            case.tracker.reset()
        return case.results

    @staticmethod
    def _model_provenance(case: CaseState) -> Any:
        """A Provenance naming the model that segmented the case (None for a user's
        segmentation): its synthetic-model warning then heads the summary and report."""
        if not case.model_provenance:
            return None
        from CTMuscleBoneLib.results import Provenance

        return Provenance(models=[dict(case.model_provenance)])

    def measure_user_segmentation(self, volume_node: Any, segmentation_node: Any,
                                  params: CTMuscleBoneParameters) -> Any:
        """Measure a segmentation the user brings (names matched to the anatomy table)."""
        from CTMuscleBoneLib import pipeline

        from . import nodes

        case = CaseState(volume_node=volume_node,
                         ct=pipeline.check_ct(nodes.ct_from_volume_node(volume_node)),
                         segmentation_node=segmentation_node, params=params)
        old = self.case
        if old is not None and old.volume_node is volume_node:  # reuse the table,
            case.table_node = old.table_node  # replace the images the values came from
            case.source_image_nodes = old.source_image_nodes
        self._discard_case()
        case.tracker = nodes.SegmentEditTracker(segmentation_node)
        self.case = case
        return self.measure(params)

    def remeasure(self, params: CTMuscleBoneParameters) -> Any:
        """Re-measure the structures edited since the last measurement (no network)."""
        from CTMuscleBoneLib import pipeline

        from . import nodes

        case = self._require_case()
        if case.results is None:
            return self.measure(params)
        labels = nodes.label_map_from_segmentation_node(case.segmentation_node, case.volume_node)
        changed: set[str] = set()
        if case.tracker is not None:  # masks compared with ``labels``: no second export
            changed = case.tracker.changed_keys(case.labels, current=labels)
        options = params.to_measure_options()
        before = case.results
        base = before
        settings = pipeline.changed_settings(before, options)
        if settings:
            # new settings: every value of the unedited labels measured again with them
            # (new calibration when its settings changed), then the edits on top, so
            # that only the edits' effects are marked as hand edits
            base = pipeline.measure(case.ct, case.labels, options,
                                    provenance=self._model_provenance(case))
            # rows corrected by hand in an earlier round stay marked
            marked = {(r.structure, r.quantity) for r in before.rows
                      if pipeline.EDITED_FLAG in r.flags}
            for r in base.rows:
                if (r.structure, r.quantity) in marked and pipeline.EDITED_FLAG not in r.flags:
                    r.flags.append(pipeline.EDITED_FLAG)
        re = pipeline.remeasure(case.ct, labels, base, changed, options)
        re.settings_changed = settings
        if settings:  # the table highlights what changed since the rows it showed
            re.changed_rows = pipeline.changed_rows_between(before, re.results)
        case.labels, case.results = labels, re.results
        case.changed_rows = set(re.changed_rows)
        self._show_results()
        if case.tracker is not None:
            case.tracker.reset()
        return re

    def _show_results(self) -> None:
        import slicer

        from . import nodes

        case = self._require_case()
        if case.table_node is None or slicer.mrmlScene.GetNodeByID(case.table_node.GetID()) is None:
            case.table_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode",
                                                                 RESULTS_TABLE_NAME)
            _mark_created(case.table_node, case.volume_node)
        nodes.update_table_node(case.table_node, case.results, edited_rows=case.changed_rows)
        # the images the values came from: replaced, not duplicated, at each update
        for node in case.source_image_nodes:
            if slicer.mrmlScene.GetNodeByID(node.GetID()) is not None:
                nodes.remove_with_display(slicer.mrmlScene, node)
        case.source_image_nodes = []
        for projection in nodes.femur_projection_nodes(slicer.mrmlScene, case.results).values():
            case.source_image_nodes += [projection.density, projection.rois]
        rois = nodes.vertebral_roi_segmentation(slicer.mrmlScene, case.results,
                                                case.ct.geometry, case.volume_node)
        if rois is not None:
            case.source_image_nodes.append(rois)
        for node in case.source_image_nodes:
            _mark_created(node, case.volume_node)

    # -- review -----------------------------------------------------------------------
    def center_on(self, key: str) -> str | None:
        """Centre the slice views on structure ``key``; returns its segment id or None."""
        import slicer

        from . import nodes

        case = self._require_case()
        segment_id = self.segment_id_for(key)
        if segment_id is None:
            return None
        nodes.center_on_segment(slicer.mrmlScene, case.segmentation_node, segment_id)
        return segment_id

    def segment_id_for(self, key: str) -> str | None:
        """Id of the segment holding anatomy structure ``key`` (None if absent)."""
        from . import nodes

        segmentation = self._require_case().segmentation_node.GetSegmentation()
        for segment_id in segmentation.GetSegmentIDs():
            if nodes.segment_key(segment_id, segmentation.GetSegment(segment_id)) == key:
                return segment_id
        return None

    # -- export -----------------------------------------------------------------------
    def export(self, folder: str | Path, save_node=None, report: bool | None = None,
               deidentify: bool = False, dicom: bool = False) -> dict[str, Path]:
        """Write results.csv/json, summary.txt, segmentation.seg.nrrd, report.html and
        report.pdf (and with ``dicom`` segmentation.dcm, measurements_sr.dcm and perhaps
        ct/) into ``folder``.

        ``save_node(node, path) -> bool`` writes the segmentation (``slicer.util.saveNode``
        in Slicer; injectable for tests). The report is the core's
        (:func:`CTMuscleBoneLib.pipeline.write_report`), with the uncertainty map the
        panel shows. ``report``: True = required, False = not written, None = written
        when matplotlib and reportlab are installed (otherwise ``export_note`` says why
        it is missing). ``dicom``: the DICOM SEG of the measured labels and the SR of the
        results (:func:`CTMuscleBoneLib.pipeline.write_dicom`; highdicom required).
        ``deidentify``: no patient identifiers in the results, report or DICOM files
        (:func:`CTMuscleBoneLib.pipeline.deidentify_results`).
        """
        from CTMuscleBoneLib import pipeline

        case = self._require_case()
        if case.results is None:
            raise RuntimeError("Nothing to export yet: analyze or measure first.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        extra = ""
        if case.synthetic_model and not case.model_provenance:
            # (with the model's provenance entry the summary's banner already says it)
            extra = f"Segmentation model: {case.clinical_use_warning}"
        results = pipeline.deidentify_results(case.results, case.ct) if deidentify \
            else case.results
        paths = dict(pipeline.write_outputs(results, folder, summary_extra=extra))
        if case.segmentation_node is not None:
            if save_node is None:
                import slicer

                save_node = slicer.util.saveNode
            seg_path = folder / "segmentation.seg.nrrd"
            if not save_node(case.segmentation_node, str(seg_path)):
                raise OSError(f"Could not write {seg_path}")
            paths["segmentation"] = seg_path
        self.export_note = ""
        if report is not False and case.labels is not None:
            from CTMuscleBoneLib.errors import MissingDependencyError

            try:
                paths.update({f"report_{k}": p for k, p in pipeline.write_report(
                    results, case.ct, case.labels, folder,
                    uncertainty=case.heatmap_arrays.get("predictive_variance"),
                    deidentify=deidentify).items()})
            except MissingDependencyError as exc:
                if report:
                    raise
                self.export_note = f"Report not written: {exc}"
        if dicom:
            if case.labels is None:
                raise RuntimeError("No measured segmentation to write as DICOM SEG: measure "
                                   "first.")
            paths.update({f"dicom_{k}": p for k, p in pipeline.write_dicom(
                results, case.ct, case.labels, folder, deidentify=deidentify).items()})
        return paths

    def _require_case(self) -> CaseState:
        if self.case is None:
            raise RuntimeError("No case: analyze a CT or measure a segmentation first.")
        return self.case


def _mark_created(node: Any, volume_node: Any = None) -> None:
    """Tag ``node`` as made by this module (for the input ``volume_node``)."""
    if node is not None:
        node.SetAttribute(CREATED_BY_ATTRIBUTE, "CTMuscleBone")
        if volume_node is not None:
            node.SetAttribute(CREATED_FOR_ATTRIBUTE, volume_node.GetID())


def _nodes_of_scene(scene: Any) -> list[Any]:
    collection = scene.GetNodes()
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def _node_ids(scene: Any) -> set[str]:
    return {node.GetID() for node in _nodes_of_scene(scene)}


def _review_rows(review: dict) -> list[dict]:
    """The ``structures`` rows of the worker's review.json, in the core's review order:
    structures the model missed (absent) first, then the highest uncertainty first."""
    return list(review["structures"])
