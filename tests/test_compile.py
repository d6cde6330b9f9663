"""--mode=compile: the steps compiled for a TPU slice on this CPU host (libtpu), with a
report other tools can read; a step that does not fit is a report and exit status 3,
before any data is read."""
import importlib
import json

import pytest

pytest.importorskip("libtpu", reason="--mode=compile for TPU slices needs libtpu (test extra)")

from victr_jax import compile_report, data, hlo  # noqa: E402  pylint: disable=g-import-not-at-top

KEYS = {"fits": bool, "hbm_bytes": int, "memory_bytes": dict, "flops": dict, "roofline": dict,
        "collectives": dict}


def _tiny(batch=16, frames=8):
  c = importlib.import_module("configs.demo").get_config(f"steps=10,frames={frames}")
  c.model.clip = "tiny"
  # Unrolled towers: the demo's scanned ones would add a second, unrolled compile for the
  # FLOP count (test_chunked_steps_are_counted_unrolled covers that path).
  c.model.scan_layers = False
  c.data.batch_size = batch
  c.data.eval_batch_size = 8
  return c


@pytest.fixture
def no_data(monkeypatch):
  """Compiling must not read (or write) any data."""
  def refuse(*a, **k):
    raise AssertionError("compile mode opened a data source")
  monkeypatch.setattr(data, "open_source", refuse)
  monkeypatch.setattr(data, "ensure_synthetic", refuse)


def test_tiny_config_compiles_for_a_v5e_slice_and_reports_every_field(tmp_path, no_data, capsys):
  status = compile_report.run(_tiny(), str(tmp_path), "v5e:2x2")
  assert status == compile_report.FITS
  rep = json.load(open(tmp_path / "compile_report.json"))
  for key, kind in KEYS.items():
    assert isinstance(rep[key], kind), key
  assert rep["fits"] is True and rep["chips"] == 4 and rep["chip"] == "v5e"
  assert set(rep["memory_bytes"]) >= {"arguments", "temporaries", "outputs", "total"}
  assert 0 < rep["memory_bytes"]["total"] < rep["hbm_bytes"]
  assert set(rep["flops"]) >= {"xla_per_device", "model_per_device", "recompute_per_device"}
  assert rep["flops"]["xla_per_device"] > 0 and rep["flops"]["model_per_device"] > 0
  assert set(rep["roofline"]) >= {"compute_s", "memory_s", "communication_s", "step_s",
                                  "mfu_bound"}
  r = rep["roofline"]
  assert r["step_s"] == max(r["compute_s"], r["memory_s"], r["communication_s"]) > 0
  assert set(rep["collectives"]) == set(hlo.COLLECTIVES)
  # Data parallel over 4 chips: the gradients are all-reduced (or reduce-scattered).
  assert rep["collectives"]["all-reduce"]["count"] + rep["collectives"]["reduce-scatter"][
      "count"] > 0
  out = capsys.readouterr().out
  assert "[compile] v5e:2x2: 4 x v5e" in out and "roofline" in out


def test_a_batch_far_too_large_is_a_does_not_fit_report(tmp_path, no_data, capsys):
  status = compile_report.run(_tiny(batch=2 ** 18), str(tmp_path), "v5e:2x2")
  assert status == compile_report.DOES_NOT_FIT
  rep = json.load(open(tmp_path / "compile_report.json"))
  assert rep["fits"] is False
  out = capsys.readouterr().out
  assert "does not fit" in out and "data.batch_size" in out


def test_collectives_are_read_from_hlo_text():
  text = "\n".join([
      "%ag = bf16[1024,64]{1,0} all-gather(bf16[256,64]{1,0} %p), replica_groups=[1,4]<=[4]",
      "%ar-start = f32[10]{0} all-reduce-start(f32[10]{0} %g), replica_groups={{0,1,2,3}}",
      "%ar-done = f32[10]{0} all-reduce-done(f32[10]{0} %ar-start)",
      "%rs = (f32[8]{0}, f32[8]{0}) reduce-scatter(f32[32]{0} %a, f32[32]{0} %b), "
      "replica_groups=[1,4]<=[4]",
  ])
  col = hlo.collectives(text)
  assert col["all-gather"] == {"count": 1, "bytes": 1024 * 64 * 2,
                               "moved_bytes": 1024 * 64 * 2 * 3 / 4}
  assert col["all-reduce"]["count"] == 1 and col["all-reduce"]["bytes"] == 40  # done not counted
  assert col["reduce-scatter"]["count"] == 1 and col["reduce-scatter"]["bytes"] == 64


def test_async_collectives_with_tuple_results():
  line = ("%ags = (bf16[256,64]{1,0:T(8,128)(2,1)}, bf16[1024,64]{1,0:T(8,128)(2,1)S(1)}) "
          "all-gather-start(bf16[256,64]{1,0:T(8,128)(2,1)} %p), channel_id=3, "
          "replica_groups=mesh['axis_0'=4] {'axis_0'}, dimensions={0}")
  col = hlo.collectives(line + "\n%agd = bf16[1024,64]{1,0} all-gather-done(%ags)")
  assert col["all-gather"]["count"] == 1 and col["all-gather"]["bytes"] == 1024 * 64 * 2


def test_tpu_mesh_replica_groups():
  line = ("%ag = bf16[128,32]{0,1:T(8,128)(2,1)} all-gather(%p), channel_id=70, "
          "replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, dimensions={1}")
  col = hlo.collectives(line)
  assert col["all-gather"]["count"] == 1 and col["all-gather"]["bytes"] == 128 * 32 * 2
  assert col["all-gather"]["moved_bytes"] == 128 * 32 * 2 * 3 / 4  # 4 devices per group


def test_tpu_mesh_replica_groups_with_device_ids():
  """A mesh over a permuted device order names device_ids between the mesh and its axes."""
  line = ("%ag = bf16[128,32]{0,1:T(8,128)(2,1)} all-gather(%p), channel_id=95, "
          "replica_groups=mesh['axis_0'=1,'axis_1'=4,'axis_2'=2], device_ids=([2,4]T(1,0)) "
          "{'axis_1'}, dimensions={1}")
  col = hlo.collectives(line)
  assert col["all-gather"]["moved_bytes"] == 128 * 32 * 2 * 3 / 4


def test_a_collective_split_over_async_stages_counts_once():
  """TPU async collectives repeat the op, with its channel, in every stage's fusion."""
  stage = ("%ag.{} = bf16[1024,64]{{1,0}} all-gather(%p), channel_id=7, "
           "replica_groups=[1,4]<=[4], dimensions={{0}}")
  col = hlo.collectives("\n".join(stage.format(i) for i in range(5)))
  assert col["all-gather"]["count"] == 1 and col["all-gather"]["bytes"] == 1024 * 64 * 2


def test_chunked_steps_are_counted_unrolled(tmp_path, no_data):
  """XLA's cost analysis counts a loop body once: with the head's attention and MLP run a
  block at a time (lax.map), the report counts the unrolled program, which does the work
  of the plain step and recomputes the chunks' scores on top."""
  def xla_flops(chunk):
    c = _tiny(frames=2)
    c.model.head.attention_chunk = chunk  # the head's loops only
    assert compile_report.run(c, str(tmp_path / str(chunk)), "v5e:2x2",
                              train_only=True) == compile_report.FITS
    rep = json.load(open(tmp_path / str(chunk) / "compile_report.json"))
    assert bool(rep.get("xla_flops_loops_unrolled")) == (chunk > 0)
    return rep["flops"]["xla_per_device"]
  assert xla_flops(4) > xla_flops(0)
  c = _tiny()
  c.model.scan_layers = True  # scanned towers loop too: their FLOPs are counted unrolled
  assert compile_report._chunked(c)  # pylint: disable=protected-access


def test_a_loop_counted_once_is_not_reconciled(tmp_path, no_data, capsys):
  """Without the unrolled count, XLA's FLOPs of a chunked step count each loop body once:
  the report gives no (model + recompute) / XLA ratio for them rather than a wrong one."""
  c = _tiny(frames=2)
  c.model.head.attention_chunk = 4
  assert compile_report.run(c, str(tmp_path), "v5e:2x2", count_flops=False,
                            train_only=True) == compile_report.FITS
  flops = json.load(open(tmp_path / "compile_report.json"))["flops"]
  assert flops["xla_counts_loops_once"] and flops["accounted"] is None
  assert "XLA counted the loops once" in capsys.readouterr().out


def test_a_device_that_is_one_core_of_a_chip_gets_that_cores_share():
  """libtpu's v4 topologies give a device per TensorCore (num_cores 1, two a chip): its
  HBM, FLOP/s and bandwidths are half the chip's; a megacore device (v5p, num_cores 2)
  and a one-core chip (v5e) are their chips."""
  from types import SimpleNamespace  # pylint: disable=g-import-not-at-top
  gib = 2 ** 30
  v4 = hlo.CHIPS["TPU v4"]
  core = hlo.chip_of(SimpleNamespace(device_kind="TPU v4", num_cores=1))
  assert core.hbm_bytes == int(15.75 * gib) and core.peak_flops == v4.peak_flops / 2
  assert core.hbm_bw == v4.hbm_bw / 2 and core.name == "v4 TensorCore"
  assert hlo.chip_of(SimpleNamespace(device_kind="TPU v4", num_cores=2)) == v4
  assert hlo.chip_of(SimpleNamespace(device_kind="TPU v5", num_cores=2)) == (
      hlo.CHIPS["TPU v5"])
  assert hlo.chip_of(SimpleNamespace(device_kind="TPU v5 lite", num_cores=1)) == (
      hlo.CHIPS["TPU v5 lite"])
  assert hlo.chip_of(SimpleNamespace(device_kind="cpu")) is None
  devices = hlo.slice_devices("v4:2x2x1")
  assert len(devices) == 8 and hlo.chip_of(devices[0]) == core


def test_a_v4_slice_reports_its_chips_and_its_devices(tmp_path, no_data, capsys):
  """v4:2x2x1 is 4 chips and 8 devices (one a TensorCore): memory and FLOPs are per
  device, against a core's 15.75 GiB; batch and clips/s per chip count chips."""
  status = compile_report.run(_tiny(batch=16), str(tmp_path), "v4:2x2x1", train_only=True)
  assert status == compile_report.FITS
  rep = json.load(open(tmp_path / "compile_report.json"))
  assert (rep["chips"], rep["devices"], rep["per_chip_batch"], rep["per_device_batch"]) == (
      4, 8, 4, 2)
  assert rep["hbm_bytes"] == int(15.75 * 2 ** 30) and rep["chip"] == "v4 TensorCore"
  r = rep["roofline"]
  assert abs(r["clips_per_s_per_chip"] * r["step_s"] - 4) < 1e-9
  assert "8 devices (one v4 TensorCore each) on 4 chips" in capsys.readouterr().out
