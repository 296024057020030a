"""Folder jobs: the input files of a command, their output names, and a runner that overlaps reading,
the nets and writing, reports every failure by file name and resumes.

Used by ``instcolor colorize`` and ``instcolor detect``; the functions are plain Python so tests call
them directly.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .imageio import IMAGE_SUFFIXES


@dataclass(frozen=True)
class InputFile:
    """One input image: ``path`` as found, ``folder`` its sub-folder relative to the input folder it
    was found in (``Path()`` for files given directly or at the top of a folder)."""

    path: Path
    folder: Path = Path()


def collect_inputs(inputs: Sequence[str | os.PathLike], recursive: bool = False,
                   exclude: Iterable[str | os.PathLike] = ()) -> tuple[list[InputFile], list[tuple[str, str]]]:
    """Files and folders -> (image files, [(name, error)]).

    A folder contributes its image files (by suffix, :data:`instcolor.imageio.IMAGE_SUFFIXES`),
    sorted; with ``recursive`` its sub-folders too, each file remembering its sub-folder so outputs can
    mirror the tree. Hidden files and folders (name starting with ".") are skipped, as is every folder
    in ``exclude`` (the output folder when it lies inside an input folder). A file given by name is
    taken whatever its suffix. A name given twice is used once."""
    skip = {Path(e).resolve() for e in exclude}
    files: list[InputFile] = []
    errors: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(f: InputFile) -> None:
        key = f.path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(f)

    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            for f in _walk(p, recursive, skip):
                add(InputFile(f, f.parent.relative_to(p)))
        elif p.is_file():
            add(InputFile(p))
        else:
            errors.append((str(raw), "no such file or folder"))
    return files, errors


def _walk(root: Path, recursive: bool, skip: set[Path]):
    try:
        entries = sorted(root.iterdir(), key=lambda e: e.name)
    except OSError:
        return
    subdirs = []
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_file() and e.suffix.lower() in IMAGE_SUFFIXES:
            yield e
        elif recursive and e.is_dir() and e.resolve() not in skip:
            subdirs.append(e)
    for d in subdirs:
        yield from _walk(d, recursive, skip)


def output_names(files: Sequence[InputFile], suffix_for: Callable[[InputFile], str]) -> list[Path]:
    """Output path (relative to the output folder) of each input: ``<folder>/<stem><suffix>``.

    Inputs that would share a name (``a.jpg`` and ``a.png`` with one output format, or two input
    folders holding ``a.jpg``) are all renamed, never dropped: ``<stem>_<input suffix>`` when that
    tells them apart (``a_jpg.png``, ``a_png.png``), else ``<stem>_<k>`` in input order. The names
    depend only on the list of inputs, so a resumed run finds the same names."""
    names = [f.folder / f"{f.path.stem}{suffix_for(f)}" for f in files]
    for _ in range(3):  # a renamed output can meet another name; three passes settle any real folder
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(str(n).lower(), []).append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return names
        for group in clashes:
            tags = [files[i].path.suffix.lower().lstrip(".") for i in group]
            distinct = len(set(tags)) == len(tags) and all(tags)
            for k, i in enumerate(group):
                n = names[i]
                tag = tags[k] if distinct else str(k + 1)
                names[i] = n.with_name(f"{n.stem}_{tag}{n.suffix}")
    raise ValueError("cannot give every input a distinct output name")  # pragma: no cover


@dataclass
class JobReport:
    """What a folder job did: output paths written, inputs skipped (output already there), and
    ``failed``: [(input name, one-line reason)]."""

    command: str
    output_dir: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def to_json(self) -> dict:
        return {"command": self.command, "output_dir": self.output_dir, "written": len(self.written),
                "skipped": len(self.skipped), "failed": [{"input": n, "error": e} for n, e in self.failed],
                "interrupted": self.interrupted, "seconds": round(self.seconds, 3),
                "outputs": self.written, "skipped_inputs": self.skipped}

    def write_json(self, path: str | os.PathLike) -> None:
        from ._fileio import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")


def error_line(name: str, exc: BaseException) -> str:
    """One line naming the input: the exception's message, prefixed with ``name`` unless it already
    names it; exceptions that are not input errors keep their type name."""
    if isinstance(exc, MemoryError):
        msg = "out of memory while processing it (try a smaller --size or --max-pixels)"
    else:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, (ValueError, OSError, TypeError)):
            msg = f"{type(exc).__name__}: {msg}"
    return msg if name in msg else f"{name}: {msg}"


def run_job(items: Sequence[Any], *, name: Callable[[Any], str], load: Callable[[Any], Any],
            process: Callable[[Any, Any], Any], save: Callable[[Any, Any], str | None], report: JobReport,
            desc: str, prefetch: int = 2, progress: bool = True, log=None) -> JobReport:
    """Run ``save(item, process(item, load(item)))`` for every item.

    ``load`` (reading and decoding) runs up to ``prefetch`` items ahead in a worker thread (0: no
    overlap at all, each item is read, processed and written before the next), ``save``
    (encoding and writing) in another, so both overlap ``process`` (the nets) on the calling thread.
    An exception in any step fails that item only: one line naming it goes to ``log`` (stderr) and to
    ``report.failed``; the other items are still done. ``save`` returns the path written. Ctrl-C
    stops after the item in hand; outputs already written stay (they are complete: writes are
    atomic), and the report says it was interrupted."""
    from tqdm import tqdm

    log = log or (lambda s: print(s, file=sys.stderr))
    t0 = time.monotonic()
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress or len(items) < 2, file=sys.stderr,
               dynamic_ncols=True)

    def say(line: str) -> None:
        if bar.disable:
            log(line)
        else:
            bar.write(line, file=sys.stderr)

    def fail(item, exc: BaseException) -> None:
        line = error_line(name(item), exc)
        report.failed.append((name(item), line))
        say(f"instcolor: {line}")

    def finish_write(item, fut) -> None:
        try:
            written = fut.result()
            if written is not None:
                report.written.append(str(written))
        except Exception as e:  # noqa: BLE001 - per-file errors are reported, never raised
            fail(item, e)
        bar.update(1)

    readers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="instcolor-read")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="instcolor-write")
    pending_reads: deque = deque()
    pending_writes: deque = deque()
    it = iter(items)

    def fill(n: int) -> None:
        while len(pending_reads) < n:
            try:
                item = next(it)
            except StopIteration:
                return
            pending_reads.append((item, readers.submit(load, item)))

    try:
        while True:
            fill(1)
            if not pending_reads:
                break
            item, fut = pending_reads.popleft()
            fill(prefetch)
            try:
                result = process(item, fut.result())
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - per-file errors are reported, never raised
                fail(item, e)
                bar.update(1)
                continue
            pending_writes.append((item, writer.submit(save, item, result)))
            while pending_writes and (pending_writes[0][1].done() or len(pending_writes) > min(2, prefetch)):
                finish_write(*pending_writes.popleft())
    except KeyboardInterrupt:
        report.interrupted = True
        for _, fut in pending_reads:
            fut.cancel()
    finally:
        while pending_writes:
            finish_write(*pending_writes.popleft())
        readers.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        bar.close()
        report.seconds = time.monotonic() - t0
    return report


def print_summary(report: JobReport, what: str, log=None) -> None:
    """The closing lines: counts, then every failure again (they scroll away during long runs)."""
    log = log or (lambda s: print(s, file=sys.stderr))
    n_fail = len(report.failed)
    parts = [f"wrote {len(report.written)} {what} to {report.output_dir}"]
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped (already there)")
    if n_fail:
        parts.append(f"{n_fail} failed")
    if report.interrupted:
        parts.append("interrupted")
    log("instcolor: " + ", ".join(parts) + f" in {report.seconds:.1f} s")
    if report.failed and len(report.written) + len(report.skipped) + len(report.failed) > 1:
        log("instcolor: failed inputs:")
        for _, line in report.failed:
            log(f"  {line}")
