"""The small MNIST subset shipped inside the package (see MNIST_SUBSET.md)."""

from __future__ import annotations

from importlib import resources

import numpy as np

from hlop.data.idx import check_split
from hlop.errors import DataError

EMBEDDED_MNIST_FILE = "mnist_subset.npz"


def load_embedded_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load the embedded stratified MNIST subset (600 train + 100 test images per class).

    Returns the same structure as ``load_dataset("mnist", root)``: images (N, 1, 28, 28).
    """
    resource = resources.files("hlop.data").joinpath(EMBEDDED_MNIST_FILE)
    try:
        with resources.as_file(resource) as path, np.load(path) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as exc:
        raise DataError(
            f"The embedded MNIST subset {resource} cannot be read ({exc}). The installation "
            "is incomplete or damaged; reinstall hlop, or rebuild the file with "
            "`python tools/make_mnist_subset.py`."
        ) from exc
    result = {}
    for split in ("train", "test"):
        keys = (f"{split}_images", f"{split}_labels")
        missing = [key for key in keys if key not in arrays]
        if missing:
            raise DataError(
                f"The embedded MNIST subset {resource} lacks the arrays {missing}. Rebuild it "
                "with `python tools/make_mnist_subset.py`."
            )
        source = f"{resource}[{keys[0]}]", f"{resource}[{keys[1]}]"
        images, labels = check_split(arrays[keys[0]], arrays[keys[1]], *source)
        result[split] = (images[:, None], labels)
    return result
