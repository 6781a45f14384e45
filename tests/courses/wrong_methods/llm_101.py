"""Wrong-method answers for llm-101 (see __init__.py)."""

from . import WrongMethod

WRONG_METHODS = {
    "attention": [
        WrongMethod("sol-softmax", ("test-softmax",), "calls the library softmax it is asked to write",
                    "def stable_softmax(x, dim=-1):\n    return torch.nn.functional.softmax(x, dim=dim)\n"),
    ],
}
