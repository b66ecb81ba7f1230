"""One exception type per failure a user can act on; each message says what to do."""


class PrepError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""


class UnknownRecipe(PrepError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown recipe {name!r}: choose one of {', '.join(sorted(known))}")


class HubUnreachable(PrepError):
    def __init__(self, repo_id: str, detail: str) -> None:
        super().__init__(
            f"the Hugging Face hub is unreachable for {repo_id} ({detail}): "
            "pass --source PATH to a local checkpoint folder"
        )


class SourceMissing(PrepError):
    """The source folder, file or wheel does not exist or lacks what the recipe needs."""


class SourceCorrupt(PrepError):
    """The source exists but cannot be read as a model (truncated weights, bad config)."""


class UnsupportedArchitecture(PrepError):
    def __init__(self, found: str, expected: str, recipe: str) -> None:
        super().__init__(
            f"recipe {recipe!r} exports {expected}, but the source is {found}: "
            "pick the recipe that matches the checkpoint"
        )


class VerificationFailed(PrepError):
    """The fp32 graph does not match torch: the export is wrong and nothing is written."""
