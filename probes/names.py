"""What can be probed and where: names shared by the library and the light ``gapeval probe`` parser."""

ATTRIBUTES = ("colour", "shape", "cell", "entity")
POSITIONS = ("last", "entity", "entity_last", "answer")
