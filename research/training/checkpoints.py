"""Orbax checkpoints of the train state, for exact resume.

The state is saved as the flat list of its arrays (`state.to_leaves`) under the step; restoring needs
a template state of this run (the structure is rebuilt from it, so a checkpoint of another model or
optimizer is refused with a clear message). Orbax writes a step into a temporary folder and renames it
when complete, so a kill during a save leaves the previous checkpoint intact.
"""

from pathlib import Path

import orbax.checkpoint as ocp

from research.core.errors import UserError
from research.training import state as state_lib


class Checkpointer:
  def __init__(self, directory: Path, *, keep: int = 2):
    self.directory = Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state) -> None:
    self.manager.save(int(step), args=ocp.args.StandardSave({"leaves": state_lib.to_leaves(state)}))

  def restore(self, template, step: int | None = None):
    step = self.latest_step() if step is None else step
    try:
      restored = self.manager.restore(step, args=ocp.args.StandardRestore(
          {"leaves": state_lib.abstract_leaves(template)}))
      return state_lib.from_leaves(template, restored["leaves"])
    except Exception as e:  # noqa: BLE001 - any failure here means an unusable checkpoint
      raise UserError(f"cannot restore checkpoint step {step} in {self.directory}: "
                      f"{str(e).splitlines()[0] if str(e) else type(e).__name__} (delete the folder to "
                      "start over, or use another workdir)") from None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
