"""The two editions (rlhf_lab.editions): the student chapters hold stubs, checks and empty practice
answers and no solution; the instructor version fills in every one; each coding problem sits in
exactly one chapter, where its concept is taught, and every chapter after 00 ends with its practice set.
That the instructor edition executes with every check passing is the chapter tier's job
(tests/test_chapters.py, "ci-instructor")."""

import ast
import contextlib
import io
import json

import pytest

from rlhf_lab import book, editions
from rlhf_lab import exercises as ex
from rlhf_lab.execution import chapter_notebook
from rlhf_lab.exercises import instructor
from rlhf_lab.exercises.problems import REGISTRY

CHAPTERS = {p.stem: p for p in book.chapter_paths()}
STUDENT = {stem: chapter_notebook(p, "student") for stem, p in CHAPTERS.items()}
ANSWER = 'exercises.answer("{}", "{}", None)  # replace None with your answer'


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _names(cell) -> set[str]:
    """Every name a code cell reads or binds (a magic line read as ``pass``)."""
    lines = [line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!"))
             else line for line in cell.source.splitlines()]
    tree = ast.parse("\n".join(lines))  # a cell that is not Python fails here, loudly
    return ({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            | {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)})


def test_edition_is_read_from_the_variable(monkeypatch):
    monkeypatch.delenv(editions.VARIABLE, raising=False)
    assert editions.edition() == "student" and not editions.is_instructor()
    monkeypatch.setenv(editions.VARIABLE, "instructor")
    assert editions.edition() == "instructor" and editions.is_instructor()
    monkeypatch.setenv(editions.VARIABLE, "teacher")
    with pytest.raises(ValueError, match=r"RLHF_LAB_EDITION='teacher'.*allowed: student, instructor"):
        editions.edition()
    with pytest.raises(ValueError, match="allowed: student, instructor"):
        editions.edition("solutions")


def test_the_editions_build_into_separate_folders(tmp_path):
    assert editions.site_folder(tmp_path, "student") == tmp_path / "html"
    assert editions.site_folder(tmp_path, "instructor") == tmp_path / "instructor" / "html"
    assert editions.run_name("ci", "student") == "ci"
    assert editions.run_name("ci", "instructor") == "ci-instructor"


def test_every_problem_sits_in_exactly_one_chapter_as_a_stub_and_its_check():
    where = {}
    for stem, nb in STUDENT.items():
        for k, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not instructor.tagged(cell, editions.EXERCISE_TAG):
                continue
            name = instructor.exercise_name(cell)  # the cell is exactly stub_source(name)
            where.setdefault(name, []).append(stem)
            assert f"Your turn: implement `{name}`" in nb.cells[k - 1].source, (stem, name)
            assert nb.cells[k + 1].source.strip() == f'exercises.check("{name}", {name})', (stem, name)
            # nothing else in the chapter reads the student's function (nor redefines the name)
            users = [c.source[:60] for c in _code(nb)
                     if c is not cell and c is not nb.cells[k + 1] and name in _names(c)]
            assert users == [], (stem, name, users)
    assert sorted(where) == sorted(ex.PROBLEMS)
    for name, stems in where.items():
        assert len(stems) == 1, (name, stems)
        assert stems[0].split("_")[0] == REGISTRY[name].chapter, (name, stems)  # as its docstring says


def test_chapters_from_01_end_with_their_practice_set():
    for chapter in ex.CHAPTERS:
        (stem,) = [s for s in CHAPTERS if s.split("_")[0] == chapter]
        text = CHAPTERS[stem].read_text()
        assert 0 < text.index("\n## Exercises\n") < text.index("\n## Practice\n"), stem
        assert "\n## " not in text.split("\n## Practice\n", 1)[1], f"{stem}: Practice is not last"
        code = _code(STUDENT[stem])
        start = next(k for k, c in enumerate(code) if c.source.strip() == f'exercises.practice("{chapter}")')
        answers = [c for c in code if instructor.tagged(c, editions.PRACTICE_TAG)]
        expected = [ANSWER.format(chapter, q.id) for q in ex.practice(chapter).questions]
        assert [c.source.strip() for c in answers] == expected, stem
        assert [c.source.strip() for c in code[start + 1:]] == expected, stem
    assert not any(instructor.tagged(c, editions.PRACTICE_TAG) for c in _code(STUDENT["00_tour"]))


def test_the_instructor_notebook_fills_in_every_tagged_cell(monkeypatch):
    monkeypatch.setenv(editions.VARIABLE, "instructor")  # a wrong answer would raise
    for stem, nb in STUDENT.items():
        solved = instructor.instructor_notebook(nb)
        assert solved.metadata["rlhf_lab"] == {"edition": "instructor"}
        assert len(solved.cells) == len(nb.cells)
        for before, after in zip(nb.cells, solved.cells):
            if before.cell_type == "code" and instructor.tagged(before, editions.EXERCISE_TAG):
                name = instructor.exercise_name(before)
                assert after.source == ex.solution_source(name).rstrip("\n")
                assert "raise NotImplementedError" in before.source  # the input is not modified
            elif before.cell_type == "code" and instructor.tagged(before, editions.PRACTICE_TAG):
                chapter, qid = instructor.practice_question(before)
                *shown, last = after.source.splitlines()
                namespace, printed = {"exercises": ex}, io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec("\n".join(shown), namespace)
                    result = eval(last, namespace)
                assert result.passed and "None" not in last, (stem, qid, after.source)
                assert printed.getvalue().startswith("Answer:")  # the worked solution
            else:
                assert after.source == before.source


def _distinctive(problem: str) -> str:
    """The longest line of the solution that the stub does not have."""
    stub = set(ex.stub_source(problem).splitlines())
    return max((line.strip() for line in ex.solution_source(problem).splitlines() if line not in stub),
               key=len)


@pytest.mark.parametrize("problem", ex.PROBLEMS)
def test_the_student_edition_holds_no_solution(problem):
    line = _distinctive(problem)
    assert len(line) > 20, line
    for stem, path in CHAPTERS.items():
        assert line not in path.read_text(), (stem, line)
        colab = json.loads((book.NOTEBOOKS / f"{stem}.ipynb").read_text())
        assert not any(line in "".join(c["source"]) for c in colab["cells"]), (stem, line)
    solved = [instructor.instructor_notebook(nb) for nb in STUDENT.values()]
    assert sum(line in c.source for nb in solved for c in nb.cells) == 1, line


def test_a_tagged_cell_in_another_form_is_refused():
    import nbformat

    stub = nbformat.v4.new_code_cell(ex.stub_source("gae").replace("raise", "return"),
                                     metadata={"tags": [editions.EXERCISE_TAG]})
    with pytest.raises(ValueError, match="stub_source"):
        instructor.instructor_notebook(nbformat.v4.new_notebook(cells=[stub]))
    answer = nbformat.v4.new_code_cell('exercises.answer("02", "q9", None)  # replace None with your answer',
                                       metadata={"tags": [editions.PRACTICE_TAG]})
    with pytest.raises(ValueError, match="q9"):
        instructor.instructor_notebook(nbformat.v4.new_notebook(cells=[answer]))
