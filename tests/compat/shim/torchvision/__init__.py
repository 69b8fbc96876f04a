"""`import torchvision` -> ddl.vision, for the compatibility suite (see shim/torch)."""
import sys

import ddl.vision

sys.modules.update({"torchvision": ddl.vision, "torchvision.datasets": ddl.vision.datasets,
                    "torchvision.transforms": ddl.vision.transforms})
