import shutil
from pathlib import Path

import pytest

from app.skills import LAYERS, ROOT, Skill, load_skills, skills_for, validate_skills

GOOD = """---
name: {name}
description: What it is and when to use it.
metadata:
  backends: {backends}
---
# Body
Some text.
"""


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    root = tmp_path / "skills"
    shutil.copytree(ROOT, root)
    return root


def write(root: Path, layer: str, name: str, text: str) -> Path:
    path = root / layer / name / "SKILL.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def only_problem(root: Path, path: Path) -> str:
    problems = validate_skills(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: "), problems
    return problems[0]


def test_real_library_is_valid():
    assert validate_skills(ROOT) == []


def test_real_library_size_and_layers():
    skills = load_skills(ROOT)
    assert len(skills) >= 25
    assert {s.layer for s in skills} == set(LAYERS)
    for s in skills:
        assert s.name == s.path.parent.name
        assert s.description and s.body.strip()
        assert s.backends


def test_real_bodies_are_focused():
    for s in load_skills(ROOT):
        lines = s.body.strip().splitlines()
        assert 30 <= len(lines) <= 200, (s.name, len(lines))


def test_missing_front_matter(lib):
    path = write(lib, "tooling", "no-front", "# Just a body\n")
    assert "no front matter" in only_problem(lib, path)


def test_unclosed_front_matter(lib):
    path = write(lib, "tooling", "unclosed", "---\nname: unclosed\n# body\n")
    assert "not closed" in only_problem(lib, path)


def test_unparsable_yaml(lib):
    path = write(lib, "tooling", "bad-yaml", "---\nname: bad-yaml\ndescription: [unclosed\n---\nbody\n")
    assert "not valid YAML" in only_problem(lib, path)


def test_front_matter_not_a_mapping(lib):
    path = write(lib, "tooling", "a-list", "---\n- one\n- two\n---\nbody\n")
    assert "not a YAML mapping" in only_problem(lib, path)


def test_name_mismatch(lib):
    path = write(lib, "tooling", "folder-name", GOOD.format(name="other-name", backends="any"))
    line = only_problem(lib, path)
    assert "'other-name' does not match its folder 'folder-name'" in line


def test_bad_name_characters(lib):
    path = write(lib, "tooling", "Bad_Name", GOOD.format(name="Bad_Name", backends="any"))
    assert "lowercase letters, digits and single hyphens" in only_problem(lib, path)


def test_double_hyphen_name(lib):
    path = write(lib, "tooling", "a--b", GOOD.format(name="a--b", backends="any"))
    assert "single hyphens" in only_problem(lib, path)


def test_name_too_long(lib):
    name = "a" * 65
    path = write(lib, "tooling", name, GOOD.format(name=name, backends="any"))
    assert "name is 65 characters (max 64)" in only_problem(lib, path)


def test_overlong_description(lib):
    text = GOOD.format(name="long-desc", backends="any").replace("What it is and when to use it.", "x" * 1025)
    path = write(lib, "tooling", "long-desc", text)
    assert "description is 1025 characters (max 1024)" in only_problem(lib, path)


def test_missing_description(lib):
    path = write(lib, "tooling", "no-desc", "---\nname: no-desc\nmetadata:\n  backends: any\n---\nbody\n")
    assert "description is missing" in only_problem(lib, path)


def test_unknown_layer(lib):
    path = write(lib, "recipes", "in-bad-layer", GOOD.format(name="in-bad-layer", backends="any"))
    assert "unknown layer 'recipes'" in only_problem(lib, path)


def test_unknown_backend(lib):
    path = write(lib, "tooling", "rocm-thing", GOOD.format(name="rocm-thing", backends="[rocm]"))
    assert "unknown backend 'rocm'" in only_problem(lib, path)


def test_missing_backends(lib):
    path = write(lib, "tooling", "no-backends", "---\nname: no-backends\ndescription: d\n---\nbody\n")
    assert "metadata.backends is missing" in only_problem(lib, path)


def test_unknown_field(lib):
    text = GOOD.format(name="extra-field", backends="any").replace("metadata:", "tags: [x]\nmetadata:")
    path = write(lib, "tooling", "extra-field", text)
    assert "unknown front matter field 'tags'" in only_problem(lib, path)


def test_folder_without_skill_file(lib):
    (lib / "tooling" / "empty-skill").mkdir()
    problems = validate_skills(lib)
    assert problems == [f"{lib / 'tooling' / 'empty-skill'}: skill folder has no SKILL.md"]


def test_backends_as_list_or_string(lib):
    write(lib, "tooling", "as-list", GOOD.format(name="as-list", backends="[mlx, cuda]"))
    write(lib, "tooling", "as-string", GOOD.format(name="as-string", backends="mlx cuda"))
    assert validate_skills(lib) == []
    found = {s.name: s.backends for s in load_skills(lib)}
    assert found["as-list"] == ["mlx", "cuda"]
    assert found["as-string"] == ["mlx", "cuda"]


def test_load_skips_broken_files(lib):
    write(lib, "tooling", "no-front", "# Just a body\n")
    names = {s.name for s in load_skills(lib)}
    assert "no-front" not in names
    assert len(names) == len(load_skills(ROOT))


def test_skills_for_mlx_excludes_cuda_only():
    skills = load_skills(ROOT)
    mlx = skills_for("mlx", skills)
    assert mlx
    assert all("mlx" in s.backends or "any" in s.backends for s in mlx)
    cuda_only = [s for s in skills if s.backends == ["cuda"]]
    anys = [s for s in skills if "any" in s.backends]
    assert cuda_only and anys
    assert not set(s.name for s in cuda_only) & set(s.name for s in mlx)
    assert set(s.name for s in anys) <= set(s.name for s in mlx)


def test_skills_for_synthetic():
    a = Skill("a", "d", "tooling", Path("a"), ["cuda"])
    b = Skill("b", "d", "tooling", Path("b"), ["any"])
    c = Skill("c", "d", "tooling", Path("c"), ["mlx", "cuda"])
    assert [s.name for s in skills_for("mlx", [a, b, c])] == ["b", "c"]
    assert [s.name for s in skills_for("cuda", [a, b, c])] == ["a", "b", "c"]
