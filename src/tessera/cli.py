"""The command line: parses arguments, calls the library, prints. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys

from tessera.errors import TesseraError


def _prune(args) -> int:
    from rich.console import Console

    from tessera.pruning.distributed import world
    from tessera.pruning.job import run_recipe
    from tessera.pruning.recipe import load_recipe
    from tessera.report import prune_rows, rich_table

    recipe = load_recipe(args.recipe)
    if args.output:
        recipe.output = args.output
    console = Console()
    result = run_recipe(recipe, progress=not args.quiet, log=console.print)
    if not world().main:  # a torchrun rank other than 0: rank 0 prints and writes
        return 0
    head, rows = prune_rows(result)
    console.print(rich_table(f"{recipe.name}: per-layer sparsity", head, rows))
    console.print(
        f"accuracy: dense {result.baseline_acc:.2f}% -> pruned {result.pruned_acc:.2f}% "
        f"({result.pruned_acc - result.baseline_acc:+.2f} points), conv weights {result.conv_compression:.2f}x fewer"
    )
    if result.library:
        from tessera.sparsity import PatternLibrary

        console.print("pattern library:\n" + PatternLibrary.from_json(json.dumps(result.library)).render())
    console.print(f"pruned model saved to {result.model_path}")
    return 0


def _run(args) -> int:
    from rich.console import Console

    from tessera.pipeline import run
    from tessera.pruning.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if args.output:
        recipe.output = args.output
    console = Console()
    r = run(recipe, threads=args.threads, progress=not args.quiet, log=console.print, export=not args.no_export)
    if r is None:  # a torchrun rank other than 0: rank 0 prints
        return 0
    ort = r.speedup("onnxruntime")
    console.print(
        f"accuracy: dense {r.baseline_acc:.2f}% -> pruned {r.pruned_acc:.2f}% ({r.pruned_acc - r.baseline_acc:+.2f} "
        f"points); conv weights {r.conv_compression:.2f}x fewer\n"
        f"speed ({r.threads} threads, batch {r.input_shape[0]}): tessera {r.ms['tessera']:.3f} ms, "
        f"{r.speedup('torch'):.2f}x faster than torch ({r.ms['torch']:.3f} ms)"
        + (f", {ort:.2f}x faster than ONNX Runtime ({r.ms['onnxruntime']:.3f} ms)" if ort else
           " (install onnxruntime to compare with ONNX Runtime)")
        + f"\nreport: {r.report}")
    return 0


def _shape(text: str | None, meta: dict) -> tuple[int, ...]:
    from tessera.errors import ConfigError

    if text:
        try:
            shape = tuple(int(v) for v in text.replace("x", ",").split(","))
        except ValueError:
            raise ConfigError(f"--input-shape must look like 1,3,32,32, got {text!r}") from None
    else:
        shape = tuple(meta.get("input_shape") or ())
    if len(shape) != 4:
        raise ConfigError("give --input-shape N,C,H,W (the model file does not record one)")
    return shape


def _load_any(path: str, threads: int | None, weights: str | None = None):
    """A pruned model (.safetensors from `tessera prune`), a compiled artifact (from `tessera compile`), or a
    ``package.module:factory`` spec (any model; ``weights`` a safetensors state dict)."""
    from tessera.io import load_tensors
    from tessera.models.external import is_spec, model_from_spec

    if is_spec(path):
        return model_from_spec(path, weights), None, {}
    if str(path).endswith(".onnx"):
        from tessera.models.onnx_import import load_onnx

        model, shape = load_onnx(path)
        return model, None, {"input_shape": list(shape) if shape else None}
    if weights:
        from tessera.errors import ConfigError

        raise ConfigError("--weights goes with a package.module:factory model; a .safetensors model has its own")

    _, meta = load_tensors(path)
    if "sha256" in meta and "decisions" in meta:
        import tessera

        cm = tessera.load(path, threads=threads)
        return cm._source[0], cm, {"input_shape": list(cm.example_shape)}
    from tessera.models import load_model

    model, meta = load_model(path)
    return model, None, meta


def _compile(args) -> int:
    import torch

    import tessera

    model, _, meta = _load_any(args.model, args.threads, args.weights)
    shape = _shape(args.input_shape, meta)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    cm = tessera.compile(model, torch.randn(shape), threads=args.threads, log=log, target=args.target)
    print(cm.report())
    from tessera.models.external import is_spec

    out = args.output or (str(args.model).rsplit(":", 1)[-1] if is_spec(args.model)
                          else str(args.model).rsplit(".", 1)[0]) + ".tsr"
    cm.save(out)
    print(f"compiled model saved to {out} (load with tessera.load)")
    return 0


def _bench(args) -> int:
    import torch

    import tessera
    from tessera.report import markdown_table
    from tessera.runtime.bench import compare

    model, cm, meta = _load_any(args.model, args.threads, args.weights)
    shape = _shape(args.input_shape, meta)
    threads = args.threads or torch.get_num_threads()
    x = torch.randn(shape)
    if cm is None:
        cm = tessera.compile(model, x, threads=threads)
    med = compare(model, cm, x, threads, onnx=args.onnx, rounds=args.rounds)
    rows = [[k, f"{v:.3f}", f"{med['torch'] / v:.2f}x"] for k, v in med.items()]
    print(markdown_table(["runtime", f"ms per batch of {shape[0]} ({threads} threads)", "speed-up vs torch"], rows))
    return 0


def _export(args) -> int:
    import torch

    import tessera
    from tessera.compiler.export import build_export, run_export
    from tessera.compiler.target import get_target

    target = get_target(args.target)  # a bad name fails before any compile
    model, cm, meta = _load_any(args.model, args.threads, args.weights)
    if cm is None:
        shape = _shape(args.input_shape, meta)
        log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
        cm = tessera.compile(model, torch.randn(shape), threads=args.threads, network=True, log=log)
    info = cm.export(args.output, target=target, threads=args.fixed_threads)
    print(f"exported {info.directory} for {target.name}: weights {info.weights_bytes} bytes, workspace "
          f"{info.workspace_bytes} bytes; kernel parameters: {info.parameters}")
    if args.check:
        command = build_export(info.directory, target)
        x = torch.randn(2, *info.input_shape)
        y, _ = run_export(command, x, info.output_shape)
        with torch.no_grad():
            ref = model.eval()(x)
        err = float((y - ref).norm() / ref.norm().clamp_min(1e-30))
        print(f"built and ran {' '.join(command)}: relative error vs torch {err:.1e}")
        if err > 1e-4:
            print("tessera: error: the exported library disagrees with torch; please report this model",
                  file=sys.stderr)
            return 1
    else:
        print(f"build it: make -C {info.directory}" + (" CC=aarch64-linux-gnu-gcc" if target.arch == "aarch64"
                                                       and not target.runs_here() else ""))
    return 0


def _onnx(args) -> int:
    import torch

    from tessera.onnx_export import export_onnx

    model, cm, meta = _load_any(args.model, None, args.weights)
    shape = _shape(args.input_shape, meta)
    path = export_onnx(model, torch.randn(shape), args.output)
    print(f"ONNX model written to {path} (sparsity per layer in its metadata_props, tessera.layer.*)")
    return 0


def _report(args) -> int:
    from tessera.report.html import write_report

    path = write_report(args.run_dir)
    print(f"report: {path} (and report.md beside it)")
    return 0


def _schema(args) -> int:
    from tessera.pruning.recipe import recipe_schema

    text = json.dumps(recipe_schema(), indent=2) + "\n"
    if args.output:
        from pathlib import Path

        from tessera.io import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode())
        print(f"recipe JSON Schema written to {args.output}")
    else:
        print(text, end="")
    return 0


def _list(args) -> int:
    if args.what == "models":
        from tessera.models import list_models

        print("\n".join(list_models()))
    else:
        from tessera.sparsity import list_schemes

        print("\n".join(list_schemes()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="train/load a baseline, prune it as a YAML recipe says, retrain, report",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example: tessera prune recipes/patdnn-8x.yaml   (run it again to resume)\n"
                              "on 2 ranks: torchrun --nproc_per_node 2 -m tessera.cli prune recipes/patdnn-8x.yaml "
                              "(batch_size is the global batch)")
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/patdnn-8x.yaml")
    p.add_argument("--output", help="override the recipe's output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_prune)
    p = sub.add_parser("run", help="the whole pipeline: prune, retrain, evaluate, compile, benchmark, export, report",
                       epilog="example: tessera run recipes/quick.yaml   (run it again to resume)")
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/quick.yaml")
    p.add_argument("--output", help="override the recipe's output folder")
    p.add_argument("--threads", type=int, help="threads for the compiled model and the timing (default: torch's)")
    p.add_argument("--no-export", action="store_true", help="skip the standalone C library")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
    p = sub.add_parser("compile", help="compile a pruned model into native kernels and save the artifact",
                       epilog="example: tessera compile mypkg.nets:resnet18 --weights pruned.safetensors "
                              "--input-shape 1,3,224,224")
    p.add_argument("model", help="pruned model .safetensors (from `tessera prune`), an .onnx file (any framework's "
                                 "model), or package.module:factory (or file.py:factory) for any model")
    p.add_argument("--weights", help="safetensors state dict for a package.module:factory model")
    p.add_argument("--input-shape", help="N,C,H,W of the inputs (default: recorded by `tessera prune`)")
    p.add_argument("--threads", type=int, help="threads for the kernels (default: torch's)")
    p.add_argument("--output", help="artifact path (default: MODEL with .tsr)")
    p.add_argument("--target", help="what to build for: host (default, or $TESSERA_TARGET), x86-avx2, portable, ... "
                                    "(a target this CPU runs; use `tessera export` for others)")
    p.add_argument("--quiet", action="store_true", help="no per-layer log")
    p.set_defaults(func=_compile)
    p = sub.add_parser("bench", help="time torch vs the compiled model (and ONNX Runtime with --onnx)",
                       epilog="example: tessera bench ./net.py:build --input-shape 1,3,224,224 --onnx")
    p.add_argument("model", help="pruned model .safetensors, compiled artifact .tsr, or package.module:factory")
    p.add_argument("--weights", help="safetensors state dict for a package.module:factory model")
    p.add_argument("--input-shape", help="N,C,H,W (default: recorded in the file)")
    p.add_argument("--threads", type=int, help="threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds (default 20)")
    p.add_argument("--onnx", action="store_true", help="also time ONNX Runtime (needs onnxruntime)")
    p.set_defaults(func=_bench)
    p = sub.add_parser("export", help="write a standalone C library of the compiled model for a target",
                       epilog="example: tessera export model.tsr build/resnet18-arm --target aarch64-neon --check")
    p.add_argument("model", help="compiled artifact .tsr, pruned model .safetensors, or package.module:factory")
    p.add_argument("output", help="directory to write (replaced when it holds an earlier export)")
    p.add_argument("--target", default="host", help="host (default), x86-avx512, x86-avx2, aarch64-neon or portable")
    p.add_argument("--weights", help="safetensors state dict for a package.module:factory model")
    p.add_argument("--input-shape", help="N,C,H,W of the inputs (default: recorded in the file)")
    p.add_argument("--threads", type=int, help="threads for compiling and tuning here (default: torch's)")
    p.add_argument("--fixed-threads", type=int, default=0,
                   help="bake a team size into the library (default 0: OpenMP's, OMP_NUM_THREADS)")
    p.add_argument("--check", action="store_true",
                   help="build it (cross compiler and qemu for another architecture) and compare with torch")
    p.add_argument("--quiet", action="store_true", help="no per-layer log")
    p.set_defaults(func=_export)
    p = sub.add_parser("onnx", help="export the pruned model as ONNX (dense weights with their zeros + sparsity "
                                    "metadata)", epilog="example: tessera onnx runs/quick/model.safetensors m.onnx")
    p.add_argument("model", help="pruned model .safetensors, compiled artifact .tsr, or package.module:factory")
    p.add_argument("output", help="the .onnx file to write")
    p.add_argument("--weights", help="safetensors state dict for a package.module:factory model")
    p.add_argument("--input-shape", help="N,C,H,W (default: recorded in the file)")
    p.set_defaults(func=_onnx)
    p = sub.add_parser("report", help="write the HTML + Markdown report of a `tessera run` folder",
                       epilog="example: tessera report runs/quick")
    p.add_argument("run_dir", help="the run's output folder (the recipe's `output`)")
    p.set_defaults(func=_report)
    p = sub.add_parser("schema", help="print the JSON Schema of a recipe (for editors' completion and checks)",
                       epilog="example: tessera schema --output recipe.schema.json")
    p.add_argument("--output", help="write it to this file instead of printing it")
    p.set_defaults(func=_schema)
    p = sub.add_parser("list", help="list registered models or sparsity schemes",
                       epilog="example: tessera list schemes")
    p.add_argument("what", choices=["models", "schemes"])
    p.set_defaults(func=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TesseraError as exc:
        print(f"tessera: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that cannot be read or written (a directory, no permission, a full disk)
        path = exc.filename2 or exc.filename  # a rename into place: the destination is the user's path
        where = f": {path}" if path else ""
        print(f"tessera: error: {exc.strerror or exc}{where}; choose another path or free some space",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tessera: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
