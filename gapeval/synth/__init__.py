"""The built-in synth world and suite (see world.py and suite.py)."""

from gapeval.synth.suite import build_suite, item_key
from gapeval.synth.world import Obj, Scene, World, parse_scene, render

__all__ = ["Obj", "Scene", "World", "build_suite", "item_key", "parse_scene", "render"]
