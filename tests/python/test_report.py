"""convergent.report: report.html over layers saved from Python is the CLI's `convergent report` over the
same directories, byte for byte; bad inputs raise convergent.Error with the CLI's message, naming the
path, and write nothing."""
import json
import subprocess

import numpy as np
import pytest

import convergent


def save_layer(directory, seed, units):
    """One layer of two nets sharing a latent signal (B's units mix A's, rectified, plus noise)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((300, units[0])) * rng.uniform(0.5, 3, units[0])
    b = np.maximum(a @ rng.standard_normal((units[0], units[1])), 0) + 0.3 * rng.standard_normal((300, units[1]))
    study = convergent.Study(["net1", "net2"])
    for k in range(0, 300, 64):
        study.add("net1", a[k:k + 64])
        study.add("net2", b[k:k + 64])
    study.save(directory, clusters=2, analyses="linear_cka,reliability,mean_distributions,sparse_prediction",
               report=False)
    return directory


@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    # conv2 has more units than the smallest max_image_side, so its matrices are drawn reduced there.
    return [save_layer(root / "conv1", 1, (6, 5)), save_layer(root / "conv2", 2, (24, 20))]


def cli_run(cli, args):
    return subprocess.run([cli, "report", *map(str, args)], capture_output=True, text=True)


def test_two_saved_layers_give_the_clis_report_byte_for_byte(cli, layers, tmp_path):
    done = cli_run(cli, [*layers, "--out", tmp_path / "cli.html"])
    assert done.returncode == 0, done.stderr
    written = convergent.report(layers, out=tmp_path / "py.html")
    assert written == str(tmp_path / "py.html")
    html = (tmp_path / "py.html").read_bytes()
    assert html == (tmp_path / "cli.html").read_bytes()
    assert b"<title>convergent report</title>" in html and b"Layer conv2" in html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.html", "py.html"]  # no temporary left


def test_the_options_and_layer_names_are_the_clis(cli, layers, tmp_path):
    done = cli_run(cli, [f"first={layers[0]}", layers[1], "--out", tmp_path / "cli.html", "--title", "two & nets",
                         "--max-image-side", "16"])
    assert done.returncode == 0, done.stderr
    convergent.report({"first": layers[0], "conv2": layers[1]}, out=tmp_path / "py.html", title="two & nets",
                      max_image_side=16)
    html = (tmp_path / "py.html").read_bytes()
    assert html == (tmp_path / "cli.html").read_bytes()
    assert b"<title>two &amp; nets</title>" in html and b"Layer first" in html


def test_without_out_the_report_goes_beside_a_single_directory_or_manifest(cli, layers, tmp_path):
    done = cli_run(cli, [layers[1]])
    assert done.returncode == 0, done.stderr
    beside = layers[1] / "report.html"
    from_cli = beside.read_bytes()
    beside.unlink()
    assert convergent.report(layers[1]) == str(beside)
    assert beside.read_bytes() == from_cli
    beside.unlink()
    manifest = tmp_path / "study.json"
    manifest.write_text(json.dumps({"layers": [{"name": "c1", "dir": str(layers[0])}, str(layers[1])]}))
    assert convergent.report([manifest]) == str(tmp_path / "report.html")
    assert b"Layer c1" in (tmp_path / "report.html").read_bytes()


def error_of(call):
    with pytest.raises(convergent.Error) as raised:
        call()
    return str(raised.value)


@pytest.mark.parametrize("bad", ["missing", "empty", "not_align", "not_manifest"])
def test_bad_inputs_raise_the_clis_message_naming_the_path_and_write_nothing(cli, layers, tmp_path, bad):
    path = tmp_path / bad
    if bad == "empty":
        path.mkdir()
    elif bad == "not_align":
        path.mkdir()
        (path / "summary.json").write_text(json.dumps({"input": "c.npy", "shape": [2, 2]}))  # match's summary
    elif bad == "not_manifest":
        path.write_text("not json")
    out = tmp_path / "out" / "report.html"
    message = error_of(lambda: convergent.report([layers[0], path], out=out))
    assert str(path) in message
    done = cli_run(cli, [layers[0], path, "--out", out])
    assert done.returncode == 1 and f"convergent: error: {message}\n" in done.stderr
    assert not (tmp_path / "out").exists()


def test_several_layers_need_out_and_bad_options_are_errors(layers, tmp_path, monkeypatch):
    assert "--out FILE" in error_of(lambda: convergent.report(layers))
    assert "no layers" in error_of(lambda: convergent.report([]))
    out = tmp_path / "r.html"
    assert "max_image_side 8" in error_of(lambda: convergent.report(layers, out=out, max_image_side=8))
    monkeypatch.setenv("CONVERGENT_VEGA_DIR", str(tmp_path / "no-vega"))
    message = error_of(lambda: convergent.report(layers, out=out))
    assert "libjs-vega" in message and str(tmp_path / "no-vega") in message
    assert "--no-report" not in message  # an align flag, no way out of a report that is the whole job
    assert list(tmp_path.iterdir()) == []


def test_study_save_refuses_a_bad_image_side_before_the_analyses(tmp_path):
    study = convergent.Study(["net1", "net2"])
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((50, 4)), rng.standard_normal((50, 3))
    study.add("net1", a)
    study.add("net2", b)
    replays = []  # mutual information's passes would call it after the other analyses

    def replay():
        replays.append(1)
        return iter([{"net1": a, "net2": b}])

    message = error_of(lambda: study.save(tmp_path / "out", analyses="all,mutual_information", replay=replay,
                                          max_image_side=8))
    assert "max_image_side 8" in message
    assert replays == []
    assert list(tmp_path.iterdir()) == []
