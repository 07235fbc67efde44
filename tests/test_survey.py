"""`rubix-eqx survey`: a 3-galaxy × 4-view survey end to end (tiny SSP, MUSE crop), reruns
that skip or redo, a SIGKILL mid-run, bad galaxies isolated, the memory guard, one
compilation for same-shaped items, and workers splitting the items."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from .cases import random_galaxy, tiny_ssp


ROOT = Path(__file__).resolve().parents[1]
VIEWS = {"inclination": [20, 70], "position_angle": [0, 90]}


def run_config(ssp_path, **output):
    return {
        "seed": 0,
        "ssp": str(ssp_path),
        "telescope": {"preset": "MUSE-WFM", "n_x": 8, "n_y": 6, "wavelength": {"stop": 5600}},
        "pipeline": {"noise": {"snr": 30}, "allow_sharper_lsf": True},
        "output": {"quicklook": None, **output},
    }


def write_survey(path: Path, ssp_path, galaxies, observations=None, **extra) -> Path:
    survey = {"run": run_config(ssp_path, **extra.pop("output", {})), "galaxies": galaxies,
              "observations": VIEWS if observations is None else observations, **extra}  # fmt: skip
    path.write_text(yaml.safe_dump(survey))
    return path


def cli(argv) -> tuple[int, str, str]:
    from rubix_eqx.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    import rubix_eqx as rx

    root = tmp_path_factory.mktemp("survey")
    tiny_ssp().to_hdf5(root / "ssp.h5")
    for i, n in enumerate((300, 500, 700)):  # all padded to the 1024 bucket
        rx.galaxy.to_hdf5(random_galaxy(i, n), root / f"gal{i}.h5")
    return root


@pytest.fixture(scope="module")
def first_run(inputs):
    survey = write_survey(inputs / "survey.yaml", inputs / "ssp.h5", [str(inputs / "gal*.h5")])
    out = inputs / "out"
    t0 = time.perf_counter()
    code, stdout, stderr = cli(["survey", str(survey), "--out", str(out)])
    return survey, out, code, stdout, stderr, time.perf_counter() - t0


def test_survey_end_to_end(first_run):
    import rubix_eqx as rx
    from rubix_eqx.survey import read_manifest, verify_outputs

    survey, out, code, stdout, stderr, _ = first_run
    assert code == 0, stdout + stderr
    assert "3 galaxies x 4 views = 12 items" in stderr and "12/12" in stderr  # the bar
    assert "12 computed now" in stdout and "0 failed" in stdout
    manifest = read_manifest(out)
    assert len(manifest) == 12 and {r["status"] for r in manifest.values()} == {"done"}
    assert sorted(manifest) == sorted(
        f"gal{g}/i{i}_pa{pa}" for g in range(3) for i in (20, 70) for pa in (0, 90)
    )
    for name, record in manifest.items():
        assert verify_outputs(out, record) is None
        assert set(record["outputs"]) == {"cube_fits", "cube_hdf5", "summary"}
        assert record["padded_to"] == 1024 and record["seconds"]["total"] > 0
    record = manifest["gal1/i70_pa90"]
    assert record["n_particles"] == 500 and record["inputs"]["observation"] == {
        "inclination": 70, "position_angle": 90}  # fmt: skip
    cube = rx.io.read_cube(out / "items" / "gal1" / "i70_pa90" / "cube.h5")
    assert cube.shape == (8, 6, 681) and int(cube.diagnostics.n_particles) == 500
    config = yaml.safe_load(rx.io.read_metadata(out / "items/gal1/i70_pa90/cube.h5")["run_config"])
    assert config["observation"]["inclination"] == 70 and config["galaxy"]["path"].endswith(
        "gal1.h5")  # fmt: skip
    # views differ: inclination changes the cube
    other = rx.io.read_cube(out / "items" / "gal1" / "i20_pa90" / "cube.h5")
    assert not np.allclose(np.asarray(cube.flux), np.asarray(other.flux))
    log = (out / "survey.log").read_text()
    assert log.count("] done in") == 12 and "[gal1/i70_pa90]" in log


def test_same_shaped_items_share_one_compilation(first_run):
    """The first item compiles the pipeline; the other 11 (same telescope, same 1024
    bucket) compile nothing but the loader's two device copies of a new galaxy size."""
    from rubix_eqx.survey import read_manifest

    _, out, _, stdout, _, seconds = first_run
    records = sorted(read_manifest(out).values(), key=lambda r: r["index"])
    first, rest = records[0], records[1:]
    # forward model, truth maps, ... (fewer when earlier tests of the session compiled
    # some of the same programs: jit caches live per process)
    assert first["compilations"] >= 1
    for r in rest:
        new_size = r["view"] == "i20_pa0"  # first view of galaxies 2 and 3
        assert r["compilations"] <= (2 if new_size else 0), (r["item"], r["compilations"])
    assert sum(r["compile_seconds"] for r in rest) < 0.1 * first["compile_seconds"]
    print(f"\ncompilations: first item {first['compilations']} "
          f"({first['compile_seconds']:.2f} s, item {first['seconds']['total']:.2f} s); other "
          f"11 items {sum(r['compilations'] for r in rest)} "
          f"({sum(r['seconds']['total'] for r in rest):.2f} s in all); "
          f"run {seconds:.1f} s")  # fmt: skip


def test_rerun_skips_done_and_redoes_missing_or_corrupt(first_run):
    from rubix_eqx.survey import read_manifest

    survey, out, *_ = first_run
    code, stdout, _ = cli(["survey", str(survey), "--out", str(out)])
    assert code == 0 and "nothing to do: all 12 items are done and verified" in stdout
    assert "0 computed now" in stdout and "0 XLA compilations" in stdout

    (out / "items/gal0/i20_pa0/cube.fits").unlink()
    corrupt = out / "items/gal2/i70_pa0/cube.h5"
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    code, stdout, _ = cli(["survey", str(survey), "--out", str(out)])
    assert code == 0 and "2 computed now (2 redone" in stdout and "10 already done" in stdout
    history = read_manifest(out, history=True)
    reasons = {r["item"]: r.get("redo_reason") for r in history if r["status"] == "running"}
    assert reasons["gal0/i20_pa0"] == "missing items/gal0/i20_pa0/cube.fits"
    assert reasons["gal2/i70_pa0"] == "checksum mismatch: items/gal2/i70_pa0/cube.h5"


def test_workers_split_the_items_and_share_the_manifest(inputs, first_run):
    from rubix_eqx.survey import read_manifest

    survey = first_run[0]
    out = inputs / "out_workers"
    for k in (1, 2):
        code, stdout, _ = cli(["survey", str(survey), "--out", str(out), "--worker", f"{k}/2"])
        assert code == 0 and "6 (of 12): 6 computed now" in stdout
    assert sorted(p.name for p in out.glob("manifest*")) == [
        "manifest.1-of-2.jsonl", "manifest.2-of-2.jsonl"]  # fmt: skip
    manifest = read_manifest(out)
    assert len(manifest) == 12 and all(r["status"] == "done" for r in manifest.values())
    assert {r["worker"] for r in manifest.values() if r["index"] % 2 == 1} == {"2/2"}
    code, stdout, _ = cli(["survey", str(survey), "--out", str(out)])  # all, one process
    assert code == 0 and "nothing to do" in stdout
    code, _, err = cli(["survey", str(survey), "--out", str(out), "--worker", "3/2"])
    assert code == 1 and "--worker 3/2: K must lie in 1..N, got K = 3, N = 2." in err


def write_raw_galaxy(path: Path, n: int, mass=None, sparse_n: int | None = None):
    """A galaxy file in our layout written with h5py (to hold values `Galaxy` refuses,
    or a huge declared size whose data are never written)."""
    g = random_galaxy(7, n)
    with h5py.File(path, "w") as f:
        f.attrs["format"], f.attrs["format_version"] = "rubix_eqx.galaxy", 1
        group = f.create_group("particles")
        for name, unit in (("position", "kpc"), ("velocity", "km/s"), ("mass", "Msun"),
                           ("age", "Gyr"), ("metallicity", "Z")):  # fmt: skip
            if sparse_n is not None:
                shape = (sparse_n, 3) if name in ("position", "velocity") else (sparse_n,)
                dset = group.create_dataset(name, shape=shape, dtype="f8", chunks=True)
            else:
                value = np.asarray(getattr(g, name))
                if name == "mass" and mass is not None:
                    value = mass
                dset = group.create_dataset(name, data=value)
            dset.attrs["units"] = unit


def test_bad_galaxies_are_recorded_and_the_rest_completes(inputs):
    import rubix_eqx as rx
    from rubix_eqx.survey import read_manifest

    root = inputs / "bad"
    root.mkdir()
    (root / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(300))  # truncated
    mass = np.full(400, 1e4)
    mass[[3, 17]] = np.nan
    write_raw_galaxy(root / "nan_mass.h5", 400, mass=mass)
    far = random_galaxy(3, 300)
    far = rx.Galaxy(far.position + 1e4, far.velocity, far.mass, far.age, far.metallicity)
    rx.galaxy.to_hdf5(far, root / "far.h5")  # 10 Mpc off: nothing in the field
    galaxies = [str(inputs / "gal0.h5"), str(root / "corrupt.h5"), str(root / "nan_mass.h5"),
                str(root / "far.h5"), str(inputs / "gal1.h5")]  # fmt: skip
    survey = write_survey(root / "survey.yaml", inputs / "ssp.h5", galaxies,
                          observations={"inclination": 45})  # fmt: skip
    out = root / "out"
    code, stdout, _ = cli(["survey", str(survey), "--out", str(out)])
    assert code == 1, stdout
    manifest = read_manifest(out)
    errors = {name: r.get("error") for name, r in manifest.items()}
    assert errors["gal0/view"] is None and errors["gal1/view"] is None
    assert manifest["gal0/view"]["status"] == manifest["gal1/view"]["status"] == "done"
    assert errors["corrupt/view"]["type"] == "GalaxyFileError"
    assert "not a readable HDF5 file" in errors["corrupt/view"]["message"]
    assert errors["nan_mass/view"] == {
        "type": "GalaxyValueError",
        "message": f"{root / 'nan_mass.h5'}: `Galaxy.mass` is NaN or infinite for 2 of 400 "
        "values (first at index 3: np.float64(nan)).",
    }
    assert errors["far/view"]["type"] == "EmptyFieldError"
    assert "all 300 particles lie outside the 8x6-spaxel field" in errors["far/view"]["message"]
    assert "3 failed" in stdout
    assert "failed      3: 1 EmptyFieldError, 1 GalaxyFileError, 1 GalaxyValueError" in stdout
    assert "nan_mass/view: GalaxyValueError: " in stdout
    # rerun: failures stand (inputs unchanged), nothing recomputed; still non-zero
    code, stdout, _ = cli(["survey", str(survey), "--out", str(out)])
    assert code == 1 and "0 computed now" in stdout and "3 failed" in stdout
    code, stdout, _ = cli(["survey", str(survey), "--out", str(out), "--retry-failed"])
    assert code == 1 and "0 computed now" in stdout and "3 failed" in stdout
    assert len([r for r in read_manifest(out, history=True) if r["status"] == "failed"]) == 6


def test_memory_guard_refuses_before_allocating(inputs, monkeypatch):
    from rubix_eqx.config import _run as _run_config
    from rubix_eqx.survey import available_memory, load_survey, read_manifest, run_survey

    root = inputs / "memory"
    root.mkdir()
    n = 20_000_000_000  # declared, never written: the file stays tiny
    write_raw_galaxy(root / "huge.h5", 0, sparse_n=n)
    assert (root / "huge.h5").stat().st_size < 100_000

    def no_load(*args, **kw):
        raise AssertionError("the galaxy was loaded")

    monkeypatch.setattr(_run_config, "build_galaxy", no_load)
    survey = load_survey(write_survey(root / "survey.yaml", inputs / "ssp.h5",
                                      [str(root / "huge.h5")], observations={}))  # fmt: skip
    result = run_survey(survey, root / "out", handle_signals=False)
    assert result.exit_code == 1 and result.errors == {"MemoryGuardError": 1}
    record = read_manifest(root / "out")["huge/view"]
    message = record["error"]["message"]
    assert record["error"]["type"] == "MemoryGuardError"
    assert "exceeds the available RAM" in message and "largest term: particles" in message
    estimate = float(message.split("estimated peak memory ")[1].split(" GB")[0]) * 1e9
    assert estimate > available_memory() and estimate >= n * 9 * 8
    # a `memory_limit` below the estimate refuses an ordinary galaxy too
    monkeypatch.undo()
    survey = load_survey(write_survey(root / "limit.yaml", inputs / "ssp.h5",
                                      [str(inputs / "gal0.h5")], observations={},
                                      memory_limit="1 MB"))  # fmt: skip
    result = run_survey(survey, root / "out_limit", handle_signals=False)
    assert result.errors == {"MemoryGuardError": 1}
    assert "exceeds the memory_limit 0.001 GB" in result.failed["gal0/view"]


def test_survey_config_errors_name_the_field(inputs):
    from rubix_eqx.config import ConfigError
    from rubix_eqx.survey import load_survey

    def survey(**kw):
        return write_survey(inputs / "err.yaml", inputs / "ssp.h5", **kw)

    with pytest.raises(ConfigError, match=r"galaxies\[0\].path: the pattern '.*nothing\*.h5' "
                       "matches no file."):  # fmt: skip
        load_survey(survey(galaxies=[str(inputs / "nothing*.h5")]))
    with pytest.raises(ConfigError, match=r"observations: observation.inclination: must lie "
                       r"in \[0, 180\] degrees, got 200."):  # fmt: skip
        load_survey(survey(galaxies=[str(inputs / "gal0.h5")], observations={"inclination": 200}))
    with pytest.raises(ConfigError, match="observations.telescope.preset: unknown preset 'MUSE'"):
        load_survey(survey(galaxies=[str(inputs / "gal0.h5")],
                           observations={"telescope": ["MUSE"]}))  # fmt: skip
    with pytest.raises(ConfigError, match="particle_buckets: must be 'auto', 'exact' or a list"):
        load_survey(survey(galaxies=[str(inputs / "gal0.h5")], particle_buckets="big"))


def test_sigkill_mid_run_then_rerun_completes(inputs, first_run):
    """SIGKILL the survey process once some items are done; the rerun finishes the rest,
    every output verifies, no temporary file is left, and no item is done twice."""
    from rubix_eqx.survey import load_survey, read_manifest, run_survey, verify_outputs

    root = inputs / "kill"
    root.mkdir()
    # quicklooks make each item slow enough (~0.3 s) to be killed in the middle
    survey = write_survey(root / "survey.yaml", inputs / "ssp.h5", [str(inputs / "gal*.h5")],
                          output={"quicklook": "quicklook.png"})  # fmt: skip
    out = root / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rubix_eqx.cli", "survey", str(survey), "--out", str(out)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    manifest_file = out / "manifest.jsonl"
    deadline = time.monotonic() + 900  # compile-bound start on slow CPUs
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest_file.exists() and manifest_file.read_text().count('"status": "done"') >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = read_manifest(out)
    n_done = sum(r["status"] == "done" for r in before.values())
    assert 3 <= n_done < 12, n_done
    # a partial file as a writer killed mid-write leaves it, in a done item's directory
    done_dir = out / "items" / next(k for k, r in before.items() if r["status"] == "done")
    (done_dir / ".cube.fits.abc123.tmp").write_bytes(b"partial")

    result = run_survey(load_survey(survey), out, handle_signals=False)
    assert result.exit_code == 0 and result.skipped == n_done and result.done == 12 - n_done
    manifest = read_manifest(out)
    assert all(r["status"] == "done" and verify_outputs(out, r) is None
               for r in manifest.values())  # fmt: skip
    assert not list(out.rglob("*.tmp"))
    history = read_manifest(out, history=True)
    done = [r["item"] for r in history if r["status"] == "done"]
    assert sorted(done) == sorted(manifest)  # every item done exactly once
    starts = [r["item"] for r in history if r["status"] == "running"]
    twice = {name for name in starts if starts.count(name) > 1}
    assert len(twice) <= 1  # only the item the kill interrupted was started twice
    assert all(r.get("redo_reason") == "interrupted" for r in history
               if r["status"] == "running" and r["item"] in twice and r["pid"] == os.getpid())


def test_manifest_ignores_a_truncated_last_line(tmp_path):
    from rubix_eqx.survey import read_manifest

    line = {"item": "a/view", "status": "done", "time": 1.0}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(line) + "\n" + '{"item": "b/vi')
    assert read_manifest(tmp_path) == {"a/view": line}
