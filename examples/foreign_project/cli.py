"""The same project through LightningCLI: ``python cli.py fit --config config.yaml``."""

from lightning.pytorch.cli import LightningCLI
from teacher_student import MLP, TeacherStudentData


def main(args=None, run: bool = True) -> LightningCLI:
    return LightningCLI(MLP, TeacherStudentData, args=args, run=run, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
