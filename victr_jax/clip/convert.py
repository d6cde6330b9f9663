"""victr-convert-clip SRC DST: any supported CLIP checkpoint -> a Flax checkpoint directory.

  victr-convert-clip SRC DST                  a checkpoint on disk
  victr-convert-clip --fetch ViT-B/16 DST     OpenAI's, downloaded (SHA-256 checked, cached)

DST holds clip_config.json (architecture, activation) and params.msgpack (float32);
`clip.load(DST)` reads it without torch. --fetch takes ViT-B/32, ViT-B/16, ViT-L/14 or
ViT-L/14@336px; the download stays in --cache for the next call.
"""
import argparse
import importlib.util
import sys
import time

from victr_jax import console

console.quiet_environment()  # before jax is imported

from victr_jax.clip import checkpoint, fetch  # noqa: E402  pylint: disable=g-import-not-at-top


def torch_available() -> bool:
  return importlib.util.find_spec("torch") is not None


def main(argv=None):
  console.quiet_logging()
  p = argparse.ArgumentParser(prog="victr-convert-clip", description=__doc__,
                              usage="%(prog)s [options] SRC DST\n       %(prog)s [options] "
                              "--fetch NAME DST",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("paths", nargs="+", metavar="PATH", help="SRC: OpenAI .pt, open_clip "
                 ".pt/.bin/.safetensors, or a Hugging Face CLIP directory; DST: the output "
                 "directory (with --fetch, DST alone)")
  p.add_argument("--fetch", metavar="NAME", choices=list(fetch.OPENAI), default=None,
                 help="download OpenAI's NAME (%(choices)s) and convert it")
  p.add_argument("--cache", default=None, help="where --fetch keeps downloads (default: "
                 f"{fetch.default_cache()})")
  p.add_argument("--act", choices=["gelu", "quick_gelu"], default=None,
                 help="activation, required for open_clip state dicts (they do not record "
                 "it): gelu unless the model name ends in -quickgelu")
  p.add_argument("--vision_heads", type=int, default=None, help="attention heads of the "
                 "image tower, for state dicts that do not record them (default: width / 64, "
                 "as every OpenAI model)")
  p.add_argument("--text_heads", type=int, default=None, help="the same for the text tower")
  p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
  args = p.parse_args(argv)
  if len(args.paths) != (1 if args.fetch else 2):
    p.error("give DST with --fetch NAME, else SRC DST")
  t0 = time.time()
  try:
    if args.fetch:
      if not torch_available():  # say so before a download of hundreds of MB
        raise checkpoint.CheckpointError(
            f"--fetch {args.fetch}: OpenAI's checkpoints are TorchScript archives, and reading "
            "one needs torch: pip install 'victr-jax[torch]' (Colab has it), then run this "
            "again")
      args.src, args.dst = fetch.fetch(args.fetch, args.cache), args.paths[0]
      print(f"{args.fetch}: {args.src} (SHA-256 checked)", flush=True)
    else:
      args.src, args.dst = args.paths
    heads = {k: v for k, v in (("vision_heads", args.vision_heads),
                               ("text_heads", args.text_heads)) if v}
    cfg, params = checkpoint.load_params(args.src, act=args.act)
    cfg = cfg.replace(**heads)  # heads do not change a parameter's shape
    checkpoint.save_converted(cfg, params, args.dst, source=args.src, overwrite=args.overwrite)
  except (checkpoint.CheckpointError, fetch.FetchError, FileExistsError) as e:
    print(f"victr-convert-clip: error: {e}", file=sys.stderr)
    return 2
  n = sum(x.size for x in __import__("jax").tree.leaves(params))
  print(f"wrote {args.dst}: {n / 1e6:.2f}M params, act={cfg.act}, image {cfg.image_size}px "
        f"patch {cfg.patch_size}, vision {cfg.vision_layers}x{cfg.vision_width}, text "
        f"{cfg.text_layers}x{cfg.text_width}, embed {cfg.embed_dim} ({time.time() - t0:.1f}s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
