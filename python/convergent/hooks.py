"""Feed studies from PyTorch forward hooks: several models run through a DataLoader in lockstep, each
hooked layer's output added to its study as it is computed, with no activations on disk.

    studies = convergent.hooks.run_models({"net1": m1, "net2": m2}, ["conv1", "fc1"], loader)
    studies["conv1"].save("out/conv1")
"""

import hashlib

import numpy as np

from . import Error, Study


def _inputs_of(batch):
    """The model inputs of a DataLoader batch: the batch itself, or the first item of a (inputs, labels)
    tuple or list."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def batch_hash(inputs):
    """SHA-1 of a batch's inputs (a tensor or an array): its shape, dtype and bytes. Two loaders that give
    the same inputs in the same order give the same hashes."""
    import torch

    if isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().cpu().contiguous().numpy()
    a = np.ascontiguousarray(inputs)
    h = hashlib.sha1()
    h.update(repr((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _layer_names(models, layers):
    """{study name: {model name: layer name}} from a list of layer names shared by every model, or that
    mapping itself. Raises TypeError when ``models`` is not a {name: module} dict."""
    if not isinstance(models, dict):
        raise TypeError(f"models: a dict {{name: torch.nn.Module}} (the names name the nets), not "
                        f"{type(models).__name__}")
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(layers, dict):
        return {study: dict(per_model) for study, per_model in layers.items()}
    return {layer: {name: layer for name in models} for layer in layers}


def _module(model_name, model, layer):
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n]
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise Error(f"model '{model_name}' has no layer named '{layer}'; its layers: {shown}")
    return modules[layer]


def run_models(models, layers, loader, studies=None, progress=None, sample_key=batch_hash, layout="channels-first",
               **study_options):
    """Runs ``loader`` through every model of ``models`` ({name: torch.nn.Module}) in lockstep, in eval
    mode and without gradients, and adds the output of each hooked layer to its study.

    ``layers``: layer names (as ``model.named_modules()`` gives them) hooked in every model, one study per
    layer named by it; or {study name: {model name: layer name}} for models whose layers are named
    differently. ``loader``: one iterable of batches (a DataLoader; a batch is the inputs, or a tuple whose
    first item is) given to every model; or {model name: loader} for models that need their own
    (different preprocessing, say): then the k-th batches must hold the same inputs, checked batch by
    batch by ``sample_key(inputs)`` (default: a SHA-1 of the inputs' bytes; pass e.g. a function of the
    sample indices when the preprocessing differs) and never assumed. Inputs are moved to each model's
    device; outputs on a CUDA device are read there in place by a study on that device (the CUDA backend)
    and copied to the host for a study on the CPU. ``studies``: {study name: Study} to add to (created with ``layout`` and
    ``study_options`` when not given). ``progress``: a tqdm bar over the batches (None: when stderr is a
    terminal and there are 10 batches or more; True, False).

    Returns {study name: Study}. Raises ``Error`` for a missing layer, a layer that runs more or less than
    once per forward pass, a non-tensor output, loaders that end at different batches or give different
    inputs, and whatever ``Study.add`` raises.
    """
    names = list(models)
    plan = _layer_names(models, layers)
    if studies is None:
        studies = {s: Study(names, layout=layout, **study_options) for s in plan}
    for model_name, outs in _forward(models, plan, loader, progress, sample_key):
        for study_name, out in outs.items():
            study = studies[study_name]
            on_host = out.is_cuda and out.device.index != study.device
            study.add(model_name, out.cpu() if on_host else out)
    return studies


def replay(models, layers, loader, study, sample_key=batch_hash):
    """For ``Study.save(replay=...)`` (mutual information's further passes) of a study that ``run_models``
    fed: a function that runs ``loader`` through the models again, as ``run_models`` did (same arguments),
    and yields {model name: output} of study ``study``'s layer batch by batch, on the host."""
    plan = _layer_names(models, layers)
    if study not in plan:
        raise Error(f"no study named '{study}'; the studies are {', '.join(plan)}")
    plan = {study: plan[study]}

    def batches():
        batch = {}
        for model_name, outs in _forward(models, plan, loader, False, sample_key):
            if study not in outs:
                continue
            batch[model_name] = outs[study].cpu()
            if len(batch) == len(plan[study]):
                yield batch
                batch = {}

    return batches


def _forward(models, plan, loader, progress, sample_key):
    """Runs ``loader`` through the models in lockstep (see ``run_models``) and yields, after each model's
    forward pass, (model name, {study name: the hooked layer's output}); hooks and training modes are
    restored when it ends or is closed."""
    import torch

    names = list(models)
    loaders = loader if isinstance(loader, dict) else None
    if loaders is not None and set(loaders) != set(names):
        raise Error(f"loaders for {sorted(loaders)}, but the models are {sorted(names)}")

    outputs = {}  # (study, model) -> outputs of the current forward pass

    def hook_for(study_name, model_name):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise Error(f"layer '{plan[study_name][model_name]}' of model '{model_name}' returns "
                            f"{type(output).__name__}, not a tensor; hook a layer that returns one")
            outputs.setdefault((study_name, model_name), []).append(output.detach())
        return hook

    handles, modes = [], {}
    try:
        for study_name, per_model in plan.items():
            for model_name, layer in per_model.items():
                module = _module(model_name, models[model_name], layer)
                handles.append(module.register_forward_hook(hook_for(study_name, model_name)))
        for model_name, model in models.items():
            modes[model_name] = model.training
            model.eval()

        total = None
        try:
            total = len(next(iter(loaders.values())) if loaders else loader)
        except TypeError:
            pass
        show = progress
        if show is None:
            show = None if (total or 0) >= 10 else False  # tqdm's None: on when stderr is a terminal
        from tqdm import tqdm

        bar = tqdm(total=total, unit="batch", desc="convergent", disable=(show is False) if show is not None else None)
        sentinel = object()
        with torch.no_grad():
            index = 0
            iterators = [iter(loaders[n]) for n in names] if loaders else None
            source = iter(loader) if not loaders else None
            while True:
                if loaders:
                    got = [next(it, sentinel) for it in iterators]
                    ended = [n for n, b in zip(names, got) if b is sentinel]
                    if ended:
                        if len(ended) != len(names):
                            raise Error(f"the loaders of {', '.join(ended)} ended at batch {index}, the others "
                                        "go on; every model needs the same inputs")
                        break
                    keys = [sample_key(_inputs_of(b)) for b in got]
                    for n, k in zip(names[1:], keys[1:]):
                        if k != keys[0]:
                            raise Error(f"batch {index}: the loader of model '{n}' gives other inputs than "
                                        f"that of '{names[0]}' (sample keys {k[:12]} and {keys[0][:12]}); "
                                        "every model needs the same inputs in the same order")
                else:
                    b = next(source, sentinel)
                    if b is sentinel:
                        break
                    got = [b] * len(names)
                for model_name, b in zip(names, got):
                    model = models[model_name]
                    x = _inputs_of(b)
                    parameter = next(model.parameters(), None)
                    if parameter is not None and isinstance(x, torch.Tensor):
                        x = x.to(parameter.device)
                    outputs.clear()
                    model(x)
                    got_outputs = {}
                    for study_name, per_model in plan.items():
                        if model_name not in per_model:
                            continue
                        seen = outputs.get((study_name, model_name), [])
                        if len(seen) != 1:
                            raise Error(f"layer '{per_model[model_name]}' of model '{model_name}' ran {len(seen)} "
                                        "times in one forward pass; hook a layer that runs once")
                        got_outputs[study_name] = seen[0]
                    outputs.clear()
                    yield model_name, got_outputs
                outputs.clear()
                index += 1
                bar.update(1)
        bar.close()
    finally:
        for h in handles:
            h.remove()
        for model_name, training in modes.items():
            models[model_name].train(training)
