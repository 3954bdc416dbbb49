"""Registries (built-ins, errors, third-party entry points), reasoning splitting, task resolution
and the closed-loop request a task builds for a later turn."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from evalkit import registry
from evalkit.errors import EvalkitError, UnknownNameError
from evalkit.models.reasoning import split_reasoning
from evalkit.records import AudioPart, AudioRef, GenerationParams, ModelOutput, Sample, TextPart, Turn
from evalkit.registry import NameCollisionError, Registry
from evalkit.tasks.base import Task, resolve_tasks

# -- built-in registries --------------------------------------------------------------------------


# Exact lists are checked in a fresh process by tests/test_cli.py (`evalkit list ...`); here other
# test modules may have registered plug-ins of their own, so the built-ins must be among the names.
def test_builtin_names() -> None:
    assert {"cascade", "hf", "openai"} <= set(registry.models.names())
    demo = {"demo", "demo-arithmetic", "demo-choice", "demo-multiturn"}
    assert demo | {"jsonl"} <= set(registry.tasks.names())
    assert {"choice", "numeric", "numeric-spoken"} <= set(registry.judges.names())
    assert registry.judges.names() == sorted(registry.judges.names())


def test_describe_gives_first_doc_line() -> None:
    rows = dict(registry.judges.describe())
    assert {"choice", "numeric", "numeric-spoken"} <= set(rows)
    assert rows["numeric"].startswith("Numeric answer")
    assert "\n" not in rows["numeric"]


@pytest.mark.parametrize(
    ("reg", "kind", "some_known"),
    [
        (registry.models, "model", ["cascade", "hf", "openai"]),
        (registry.tasks, "task", ["demo", "jsonl", "mmau-mini", "mmsu-bench", "audio-multichallenge"]),
        (registry.judges, "judge", ["choice", "numeric", "mmau-string-match", "amc-rubric"]),
    ],
)
def test_unknown_name_lists_known_names(reg: Registry, kind: str, some_known: list[str]) -> None:
    with pytest.raises(UnknownNameError) as info:
        reg.get("bogus")
    message = str(info.value)
    assert f"unknown {kind} 'bogus'" in message
    listed = message.split(f"known {kind}s: ", 1)[1].split(" (see")[0].split(", ")
    assert set(some_known) <= set(listed)
    assert listed == sorted(listed) and listed == reg.names()
    assert f"evalkit list {kind}s" in message
    assert isinstance(info.value, EvalkitError)


def test_get_returns_registered_class() -> None:
    from evalkit.judges.numeric import NumericJudge

    assert registry.judges.get("numeric") is NumericJudge


def test_double_registration_of_another_object_raises() -> None:
    reg = Registry("judge", "evalkit.test-no-such-group", ())

    class First:
        pass

    class Second:
        pass

    assert reg.register("x")(First) is First
    assert reg.register("x")(First) is First  # the same object again is harmless
    with pytest.raises(
        NameCollisionError, match="judge 'x' is defined twice: by module test_registry and by"
    ):
        reg.register("x")(Second)
    assert reg.get("x") is First
    assert reg.names() == ["x"]


def test_empty_registry_says_none() -> None:
    reg = Registry("widget", "evalkit.test-no-such-group", ())
    with pytest.raises(UnknownNameError, match="known widgets: none"):
        reg.get("a")


# -- entry-point discovery --------------------------------------------------------------------------


def _install_plugin(root: Path, module: str, entry_points: str) -> None:
    """A real, minimal installed distribution: a module plus its *.dist-info folder."""
    (root / f"{module}.py").write_text(
        textwrap.dedent(
            '''
            from evalkit.judges.base import Judge
            from evalkit.records import Score


            class ShoutJudge(Judge):
                """Passes replies written in capitals (a third-party plug-in)."""

                name = "shout"

                def score(self, sample, outputs):
                    text = outputs[-1].text or ""
                    return Score(judge=self.name, metrics={"loud": float(text.isupper())})


            class Clash:
                """Would take a name already registered."""
            '''
        )
    )
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)


def test_entry_point_plugin_is_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "evalkit_test_shout_plugin"
    _install_plugin(
        tmp_path,
        module,
        f"[evalkit.judges]\nshout = {module}:ShoutJudge\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)

    reg = Registry("judge", "evalkit.judges", ())
    try:
        assert "shout" in reg.names()
        assert module not in sys.modules  # listed by name, imported only when asked for
        cls = reg.get("shout")
        assert cls.__name__ == "ShoutJudge"
        assert cls.__module__ == module
        assert dict(reg.describe())["shout"] == "Passes replies written in capitals (a third-party plug-in)."
        score = cls().score(
            Sample(id="s", task="t", conversation=[Turn(role="user", text="q")]), [ModelOutput(text="HEY")]
        )
        assert score.metrics == {"loud": 1.0}
    finally:
        sys.modules.pop(module, None)


def test_plugin_absent_without_its_path() -> None:
    reg = Registry("judge", "evalkit.judges", ())
    assert "shout" not in reg.names()


# -- reasoning ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "prefilled", "expected"),
    [
        ("<think>add 7 and 5</think>The answer is 12.", False, ("The answer is 12.", "add 7 and 5")),
        ("  <think>\nR\n</think>\n\nA  ", False, ("A", "R")),
        ("add 7 and 5</think>The answer is 12.", False, ("The answer is 12.", "add 7 and 5")),
        ("add 7 and 5</think>The answer is 12.", True, ("The answer is 12.", "add 7 and 5")),
        ("<think>still thinking about", False, ("", "still thinking about")),
        ("The answer is 12.", False, ("The answer is 12.", None)),
        ("still thinking, cut off", True, ("", "still thinking, cut off")),
        ("", True, ("", None)),
        ("<think>a</think>x <think>b</think>y", False, ("x y", "a\nb")),
        ("<think></think>Just the answer", False, ("Just the answer", None)),
    ],
    ids=[
        "full-block",
        "whitespace",
        "prefilled-no-open-tag",
        "prefilled-flag-with-close",
        "unclosed",
        "no-tags",
        "prefilled-without-close",
        "prefilled-empty",
        "two-blocks",
        "empty-think",
    ],
)
def test_split_reasoning(text: str, prefilled: bool, expected: tuple[str, str | None]) -> None:
    assert split_reasoning(text, prefilled=prefilled) == expected


# -- tasks ----------------------------------------------------------------------------------------


def test_resolve_demo_family_expands() -> None:
    tasks = resolve_tasks("demo")
    assert [t.name for t in tasks] == ["demo-arithmetic", "demo-choice", "demo-multiturn"]
    assert [t.judges for t in tasks] == [("numeric-spoken",), ("choice",), ("numeric-spoken",)]


def test_resolve_tasks_dedups_keeping_first_position() -> None:
    tasks = resolve_tasks(" demo-choice , demo, demo-arithmetic,demo-choice ")
    assert [t.name for t in tasks] == ["demo-choice", "demo-arithmetic", "demo-multiturn"]


@pytest.mark.parametrize(("spec", "message"), [("", "no tasks given"), (" , ", "no tasks given")])
def test_resolve_tasks_empty(spec: str, message: str) -> None:
    with pytest.raises(EvalkitError, match=message):
        resolve_tasks(spec)


def test_resolve_tasks_unknown_and_bad_argument() -> None:
    with pytest.raises(UnknownNameError, match="unknown task 'nope'"):
        resolve_tasks("demo,nope")
    with pytest.raises(EvalkitError, match="takes no argument"):
        resolve_tasks("demo-choice:extra")


class ThreeTurnTask(Task):
    name = "three-turn"
    judges = ("numeric",)
    system_prompt = "Be brief."
    params = GenerationParams(max_tokens=33)

    def samples(self, limit=None):
        yield from []


def _three_turn_sample(tmp_path: Path) -> Sample:
    clips = []
    for k in range(3):
        clip = tmp_path / f"t{k}.wav"
        clip.write_bytes(f"clip {k}".encode())
        clips.append(AudioRef(path=str(clip)))
    return Sample(
        id="conv",
        task="three-turn",
        conversation=[
            Turn(role="user", audio=clips[0], text="first", transcript="spoken first"),
            Turn(role="user", audio=clips[1], transcript="spoken second"),
            Turn(role="user", audio=clips[2], text="third"),
        ],
        reference={"turns": [{"answer": "1"}, {"answer": "2"}, {"answer": "3"}]},
    )


def test_build_request_third_turn_with_history(tmp_path: Path) -> None:
    task = ThreeTurnTask()
    sample = _three_turn_sample(tmp_path)
    history = [ModelOutput(text="reply one", reasoning="hidden"), ModelOutput(text="reply two")]
    request = task.build_request(sample, 2, history)

    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    system, u0, a0, u1, a1, u2 = request.messages
    assert system.content == [TextPart(text="Be brief.")]
    assert u0.content == [AudioPart(audio=sample.conversation[0].audio), TextPart(text="first")]
    assert a0.content == [TextPart(text="reply one")]  # the model's own reply, reasoning left out
    assert u1.content == [AudioPart(audio=sample.conversation[1].audio)]  # no text: audio only
    assert a1.content == [TextPart(text="reply two")]
    assert u2.content == [AudioPart(audio=sample.conversation[2].audio), TextPart(text="third")]
    # the transcript is never sent
    assert "spoken" not in request.model_dump_json()
    assert request.params == GenerationParams(max_tokens=33)


def test_build_request_first_turn_has_no_history(tmp_path: Path) -> None:
    request = ThreeTurnTask().build_request(_three_turn_sample(tmp_path), 0, [])
    assert [m.role for m in request.messages] == ["system", "user"]


def test_build_request_replaces_scripted_assistant_turns(tmp_path: Path) -> None:
    task = ThreeTurnTask()
    task.system_prompt = None
    sample = Sample(
        id="s",
        task="three-turn",
        conversation=[
            Turn(role="user", text="q1"),
            Turn(role="assistant", text="scripted answer"),
            Turn(role="user", text="q2"),
        ],
    )
    assert task.answer_turns(sample) == [0, 2]
    request = task.build_request(sample, 2, [ModelOutput(text="model answer")])
    assert [(m.role, m.text()) for m in request.messages] == [
        ("user", "q1"),
        ("assistant", "model answer"),
        ("user", "q2"),
    ]


def test_build_request_turn_without_content_is_an_error() -> None:
    sample = Sample(id="empty", task="three-turn", conversation=[Turn(role="user")])
    with pytest.raises(EvalkitError, match="neither text nor audio"):
        ThreeTurnTask().build_request(sample, 0, [])


def test_every_registered_task_class_is_importable_by_its_recorded_path() -> None:
    """finalize (and `evalkit report` on an old run) re-imports a task class from the manifest."""
    import importlib

    from evalkit.tasks.base import Task

    for name in registry.tasks.names():
        entry = registry.tasks.get(name)
        if isinstance(entry, type) and issubclass(entry, Task):
            path = f"{entry.__module__}.{entry.__qualname__}"
            module, _, qualname = path.rpartition(".")
            assert getattr(importlib.import_module(module), qualname) is entry, path


# -- lazy loading, broken plug-ins, collisions (fake entry points) ------------------------------------
GOOD = """
from evalkit.judges.base import Judge
from evalkit.records import Score


class Good(Judge):
    '''A plug-in that works.'''

    name = "good"

    def score(self, sample, outputs):
        return Score(judge=self.name)
"""


def _fake_entry_points(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, modules: dict[str, str], points: dict[str, str]
) -> None:
    """``modules`` (name -> source) importable from ``tmp_path``; ``points`` (entry-point name ->
    value) what ``registry.plugin_entry_points`` reports for the test group."""
    from importlib.metadata import EntryPoint

    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint(name=n, value=v, group="evalkit.test-judges") for n, v in points.items()]
    listed = lambda group: [ep for ep in eps if ep.group == group]  # noqa: E731
    monkeypatch.setattr(registry, "plugin_entry_points", listed)


@pytest.fixture
def judges(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """The real judge registry (its built-in table), reading the fake group, its entries restored after."""
    reg = registry.judges
    for attr in ("_entries", "_origins"):
        monkeypatch.setattr(reg, attr, dict(getattr(reg, attr)))
    monkeypatch.setattr(reg, "_searched", False)
    monkeypatch.setattr(reg, "_entry_points", None)
    monkeypatch.setattr(reg, "group", "evalkit.test-judges")
    return reg


def test_a_plugin_that_fails_to_import_is_a_warning_and_the_rest_works(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, judges: Registry
) -> None:
    _fake_entry_points(
        monkeypatch,
        tmp_path,
        {"evalkit_t_good": GOOD, "evalkit_t_broken": "raise ImportError('no module named torchy')\n"},
        {"good": "evalkit_t_good:Good", "broken": "evalkit_t_broken:Judge", "bare": "evalkit_t_broken"},
    )
    reg = judges
    assert reg.get("good").__name__ == "Good"  # no warning: the broken module is never imported
    assert "evalkit_t_broken" not in sys.modules
    assert reg.get("numeric").__name__ == "NumericJudge"
    with pytest.warns(registry.PluginWarning) as caught:
        rows = dict(reg.describe())
    assert {"good", "numeric", "choice"} <= set(rows) and "broken" not in rows
    messages = [str(w.message) for w in caught]
    assert any("'broken = evalkit_t_broken:Judge'" in m and "torchy" in m for m in messages), messages
    assert any("'bare = evalkit_t_broken'" in m for m in messages), messages
    with pytest.raises(EvalkitError, match=r"judge 'broken' comes from plug-in entry point 'broken = "):
        reg.get("broken")


def test_a_plugin_named_like_a_builtin_is_an_error_naming_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_entry_points(monkeypatch, tmp_path, {"evalkit_t_good": GOOD}, {"numeric": "evalkit_t_good:Good"})
    reg = Registry("judge", "evalkit.test-judges", {"numeric": "evalkit.judges.numeric"})  # not imported yet
    with pytest.raises(NameCollisionError) as info:
        reg.get("numeric")
    message = str(info.value)
    assert "judge 'numeric' is defined twice" in message
    assert "built-in module evalkit.judges.numeric" in message
    assert "'numeric = evalkit_t_good:Good'" in message
    with pytest.raises(NameCollisionError):
        reg.names()


def test_two_plugins_of_one_name_are_an_error_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    eps = [
        EntryPoint(name="good", value="pkg_a:Good", group="evalkit.test-judges"),
        EntryPoint(name="good", value="pkg_b:Good", group="evalkit.test-judges"),
    ]
    monkeypatch.setattr(registry, "plugin_entry_points", lambda group: eps)
    reg = Registry("judge", "evalkit.test-judges", {})
    with pytest.raises(NameCollisionError, match=r"'good = pkg_a:Good'.* and by .*'good = pkg_b:Good'"):
        reg.get("good")


def test_a_bare_module_plugin_registering_a_builtin_name_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, judges: Registry
) -> None:
    source = "from evalkit import registry\n\n\n@registry.judges.register('choice')\nclass Mine:\n    pass\n"
    _fake_entry_points(monkeypatch, tmp_path, {"evalkit_t_clash": source}, {"clash": "evalkit_t_clash"})
    with pytest.raises(
        NameCollisionError, match="by (built-in )?module evalkit.judges.choice and by module evalkit_t_clash"
    ):
        registry.judges.names()


def test_a_name_imports_only_its_own_module() -> None:
    """Lazy per-name loading, in a fresh interpreter (this one has imported everything)."""
    import subprocess

    code = (
        "import sys\n"
        "from evalkit.registry import judges, tasks\n"
        "judges.get('choice'); tasks.get('jsonl')\n"
        "heavy = ('evalkit.judges.emotion', 'evalkit.judges.naturalness', 'evalkit.tasks.mmau',"
        " 'evalkit.judges.rubric')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("reg", [registry.models, registry.tasks, registry.judges], ids=lambda r: r.kind)
def test_the_builtin_table_names_the_module_that_registers_each_name(reg: Registry) -> None:
    for name, module in reg._builtins.items():
        reg.get(name)
        assert reg._origins[name] == f"module {module}", name
    providers = {f"module {m}" for m in reg._providers}
    for name in reg.names():
        origin = reg._origins.get(name, "")
        if origin.startswith("module evalkit."):
            assert name in reg._builtins or origin in providers, f"{name} is missing from the table"


# -- one option parser: every spec validates into a typed options model ------------------------------
@pytest.mark.parametrize(
    ("spec", "load", "where", "key", "close"),
    [
        ("vllm:/m,tpp=2", "model", "model spec 'vllm:/m,tpp=2'", "tpp", "tp"),
        ("hf:/m,dtyp=float16", "model", "model spec 'hf:/m,dtyp=float16'", "dtyp", "dtype"),
        ("cascade:tss=none", "model", "model spec 'cascade:...'", "tss", "tts"),
        (
            "step-audio-r1.5:servd=x@http://127.0.0.1:1/v1",
            "model",
            "model spec 'step-audio-r1.5:",
            "servd",
            "served",
        ),
        ("mmau-mini:splt=test", "task", "task spec 'mmau-mini:...'", "splt", "split"),
        (
            "jsonl:path=x.jsonl,judges=numeric,groupby=a",
            "task",
            "task spec 'jsonl:...'",
            "groupby",
            "group_by",
        ),
    ],
)
def test_an_unknown_option_is_one_line_naming_the_spec_the_key_and_the_closest(
    spec: str, load: str, where: str, key: str, close: str
) -> None:
    from evalkit.errors import SpecError
    from evalkit.models.base import load_model

    with pytest.raises(SpecError) as info:
        load_model(spec) if load == "model" else resolve_tasks(spec)
    message = str(info.value)
    assert "\n" not in message
    assert f"unknown option {key!r} in {where}" in message
    assert f"did you mean {close!r}?" in message


def test_a_bad_value_names_the_option_and_a_missing_one_says_so() -> None:
    from evalkit.errors import SpecError
    from evalkit.models.base import load_model

    with pytest.raises(SpecError, match=r"bad option eager='maybe' in model spec 'vllm:/m,eager=maybe'"):
        load_model("vllm:/m,eager=maybe")
    with pytest.raises(SpecError, match=r"task spec 'jsonl:\.\.\.'.* needs judges=\.\.\."):
        resolve_tasks("jsonl:path=x.jsonl")


def test_judge_settings_are_typed_options_with_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from evalkit.errors import SpecError
    from evalkit.judges.asr_consistency import AsrConsistencyJudge

    monkeypatch.delenv("EVALKIT_ASR_MODEL", raising=False)
    monkeypatch.delenv("EVALKIT_JUDGE_DEVICE", raising=False)
    assert AsrConsistencyJudge().describe()["options"] == {"asr_model": "tiny.en", "device": "auto"}
    monkeypatch.setenv("EVALKIT_ASR_MODEL", "base.en")
    monkeypatch.setenv("EVALKIT_JUDGE_DEVICE", "cpu")
    judge = AsrConsistencyJudge()
    assert judge.describe()["options"] == {"asr_model": "base.en", "device": "cpu"}  # what ran is recorded
    assert AsrConsistencyJudge(asr_model="small.en").options.asr_model == "small.en"  # a given value wins
    monkeypatch.setenv("EVALKIT_JUDGE_DEVICE", "gpu")
    with pytest.raises(
        SpecError, match=r"bad option device='gpu' in judge 'asr' \(from \$EVALKIT_JUDGE_DEVICE\)"
    ):
        AsrConsistencyJudge()
    with pytest.raises(
        SpecError, match="unknown option 'treshold' in judge 'voice'; did you mean 'threshold'"
    ):
        from evalkit.judges.base import build_options
        from evalkit.judges.voice import VoiceOptions

        build_options(VoiceOptions, "voice", treshold=0.5)
