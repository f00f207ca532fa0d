"""Ships the top-level templates/ inside the wheel as datasette_imgsim/templates/, where
Datasette looks for a plugin's templates; everything else is in pyproject.toml.
(A symlink would do it too, but becomes a text file on checkouts without symlinks.)"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TEMPLATES = Path(__file__).parent / "templates"


class BuildPyWithTemplates(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # a checkout reads templates/ where it is (templates_dir())
        target = Path(self.build_lib) / "datasette_imgsim" / "templates"
        target.mkdir(parents=True, exist_ok=True)
        for template in TEMPLATES.glob("*.html"):
            shutil.copy2(template, target / template.name)


setup(cmdclass={"build_py": BuildPyWithTemplates})
