"""The base class every config section derives from: strict keys, docstrings as field descriptions."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

CpuList = Annotated[list[int], Field(min_length=1)]
"""CPU ids a role's process may run on (`actors.cpu_affinity`, `learner.cpu_affinity`): at least one."""


class Section(BaseModel):
    """A config section. Unknown keys are errors and every field documents itself.

    `use_attribute_docstrings` turns the docstring under each field into its description, which
    `tandem config reference` renders into docs/configuration.md, so the docs cannot drift from the code.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_default=True,
    )
