"""Human preference studies (``evalkit study``): the blind page in headless Chromium, the analysis
recovering a planted ranking from simulated raters (JSONL and CSV), the arena judge against the
loopback server, the TRL preference file loaded with ``datasets``, and the leaderboard's study
table.

Runs are written here as run directories (manifest, samples.jsonl, responses.jsonl, audio), the
format contract every reader of a run relies on; the arena test uses runs the runner made."""

from __future__ import annotations

import csv
import json
import math
import random
import re
import sqlite3
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from evalkit.errors import EvalkitError
from evalkit.records import (
    AudioRef,
    ModelOutput,
    ResponseRecord,
    Sample,
    SampleRecord,
    Score,
    ScoreRecord,
    Turn,
)
from evalkit.study.analyze import analyze
from evalkit.study.build import CRITERIA, PLANTED, build_study, load_key
from evalkit.study.runs import load_study_runs
from evalkit.testing.browser import browser_available, console_errors, headless_chromium, wait_until
from evalkit.testing.openai_server import OpenAIServer, pcm16_to_wav, tone_pcm16

MODELS = ("alpha-voice", "bravo-voice", "charlie-voice", "delta-voice")
#: the planted ranking: Bradley-Terry strengths (log-odds), best first
TRUE_STRENGTH = {"alpha-voice": 1.2, "bravo-voice": 0.4, "charlie-voice": -0.4, "delta-voice": -1.2}
RESAMPLES = 200


def tagged(wav: bytes, text: str) -> bytes:
    """``wav`` with a LIST/INFO chunk naming its software (as encoders write): metadata that must
    not reach a blind page."""
    value = text.encode() + b"\0" * (2 - len(text) % 2)
    info = b"INFO" + b"ISFT" + len(value).to_bytes(4, "little") + value
    out = wav + b"LIST" + len(info).to_bytes(4, "little") + info
    return out[:4] + (len(out) - 8).to_bytes(4, "little") + out[8:]


def make_run(
    root: Path,
    model: str,
    n_items: int,
    turns: int = 1,
    freq: float = 440.0,
    quality: float | None = None,
    rate: int = 24000,
) -> Path:
    """A finished run directory of ``model`` (spec ``openai:MODEL@URL``): ``n_items`` spoken
    conversations of ``turns`` turns, the user's and the model's audio as tone clips; with
    ``quality``, a ``listener`` score per conversation around it (scores.jsonl)."""
    (root / "audio" / "inputs").mkdir(parents=True)
    (root / "audio" / "t").mkdir()
    manifest = {"schema_version": 1, "run_id": root.name, "status": "finished"}
    manifest["model"] = {"spec": f"openai:{model}@http://127.0.0.1:9/v1"}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    samples, responses = [], []
    for i in range(n_items):
        conversation = []
        for k in range(turns):
            user = f"audio/inputs/u{i}_{k}.wav"
            (root / user).write_bytes(pcm16_to_wav(tone_pcm16(0.15, freq=200.0 + 10 * i)))
            conversation.append(Turn(role="user", transcript=f"question {i}.{k}", audio=AudioRef(path=user)))
            reply = f"audio/t/s{i}_t{k}.wav"
            clip = pcm16_to_wav(tone_pcm16(0.2, rate=rate, freq=freq), rate=rate)
            (root / reply).write_bytes(tagged(clip, f"tts of {model}"))
            output = ModelOutput(text=f"reply {i}.{k} of {model}", audio=AudioRef(path=reply))
            responses.append(
                ResponseRecord(
                    task="t", sample_id=f"s{i}", sample_index=i, turn=k, request_hash="h", output=output
                )
            )
        sample = Sample(id=f"s{i}", task="t", conversation=conversation)
        samples.append(SampleRecord(task="t", sample_index=i, sample=sample))
    (root / "samples.jsonl").write_text("".join(s.to_json() + "\n" for s in samples), encoding="utf-8")
    (root / "responses.jsonl").write_text("".join(r.to_json() + "\n" for r in responses), encoding="utf-8")
    if quality is not None:
        rng = random.Random(model)
        scores = [
            ScoreRecord(
                task="t",
                sample_id=f"s{i}",
                sample_index=i,
                score=Score(
                    judge="listener", metrics={"listener_naturalness": 3 + quality + rng.gauss(0, 0.5)}
                ),
            )
            for i in range(n_items)
        ]
        (root / "scores.jsonl").write_text("".join(r.to_json() + "\n" for r in scores), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("study-runs")
    return [
        make_run(
            base / f"run_{m}", m, 12, freq=300.0 + 100 * j, quality=TRUE_STRENGTH[m], rate=16000 * (1 + j % 2)
        )
        for j, m in enumerate(MODELS)
    ]


@pytest.fixture(scope="module")
def study(runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study") / "study"
    build_study(runs, out, seed=3, repeats=3)
    return out


# -- simulated raters ---------------------------------------------------------------------------------
def honest_winner(a: str, b: str, rng: random.Random) -> str:
    """A Bradley-Terry rater (no ties); the planted side always loses."""
    if PLANTED in (a, b):
        return "b" if a == PLANTED else "a"
    gap = TRUE_STRENGTH[b.split(":")[-1]] - TRUE_STRENGTH[a.split(":")[-1]]
    p = 1 / (1 + math.exp(gap))
    return "a" if rng.random() < p else "b"


def simulated_votes(key: dict[str, Any], n_honest: int = 4, seed: int = 2) -> list[dict[str, Any]]:
    """What the page exports for ``n_honest`` BT raters and one rater voting at random."""
    rng = random.Random(seed)
    lines = []
    for r in range(n_honest + 1):
        rater = f"rater{r}" if r < n_honest else "random-clicker"
        for trial, entry in key["trials"].items():
            for criterion in key["criteria"]:
                if r < n_honest:
                    winner = honest_winner(entry["a"], entry["b"], rng)
                else:
                    winner = rng.choice(["a", "b", "tie"])
                lines.append(
                    {
                        "study": key["study_id"],
                        "rater": rater,
                        "trial": trial,
                        "criterion": criterion,
                        "winner": winner,
                    }
                )
    return lines


def check_recovered(results: dict[str, Any]) -> None:
    assert results["raters"]["n"] == 5
    assert results["raters"]["n_excluded"] == 1
    assert [e["rater"] for e in results["raters"]["excluded"]] == ["random-clicker"]
    misses = []
    for criterion in CRITERIA:
        result = results["criteria"][criterion]
        assert [m.split(":")[-1] for m in result["ranking"]] == list(TRUE_STRENGTH), criterion
        for model, info in result["models"].items():
            low, high = info["strength_ci"]
            assert low < info["strength"] < high
            if not low <= TRUE_STRENGTH[model.split(":")[-1]] <= high:
                misses.append((criterion, model, info["strength_ci"]))
        assert result["n_raters"] == 4
        assert 0.0 < result["krippendorff_alpha"] < 1.0
    # 16 intervals at 95% (4 criteria voted independently, 4 models): 0.8 misses expected
    assert len(misses) <= 2, misses


# -- the page -----------------------------------------------------------------------------------------
def test_study_folder_is_blind_and_the_key_maps_every_trial(study: Path, runs: list[Path]) -> None:
    key = load_key(study)
    kinds = [t["kind"] for t in key["trials"].values()]
    assert kinds.count("planted") == 1 and kinds.count("repeat") == 3
    assert kinds.count("pair") == 12 * 6  # every pair of the 4 runs on each of the 12 items
    public = [p for p in study.rglob("*") if p.is_file() and p.name != "key.json"]
    clips = [p for p in public if p.parent.name == "audio"]
    assert all(re.fullmatch(r"[0-9a-f]{20}\.wav", p.name) for p in clips)
    # one rate and channel count for every clip: runs at 16 and 32 kHz are not told apart by it
    assert {(sf.info(str(p)).samplerate, sf.info(str(p)).channels) for p in clips} == {(24000, 1)}
    assert MODELS[0].encode() in (runs[0] / "audio" / "t" / "s0_t0.wav").read_bytes()  # the source is tagged
    secrets = [*MODELS, *(r.name for r in runs), "127.0.0.1:9"]
    for path in public:
        text = path.read_bytes().decode("latin-1")
        assert not any(s in text for s in secrets), path
    repeat = next(t for t in key["trials"].values() if t["kind"] == "repeat")
    original = next(
        t for t in key["trials"].values() if t["kind"] == "pair" and t.get("group") == repeat["group"]
    )
    assert (repeat["a"], repeat["b"], repeat["item"]) == (original["b"], original["a"], original["item"])


@pytest.mark.skipif(not browser_available(), reason="needs selenium, chromium and chromedriver")
def test_page_in_chromium_is_blind_plays_audio_keeps_progress_and_exports_votes(study: Path) -> None:
    key = load_key(study)
    with headless_chromium() as driver:
        driver.get((study / "index.html").as_uri())
        wait_until(lambda: driver.execute_script("return document.readyState") == "complete")
        driver.find_element("id", "rater").send_keys("ana")
        driver.find_element("id", "begin").click()
        wait_until(lambda: driver.find_element("id", "trial").is_displayed())
        # blind: no model name anywhere in what the page shows or links
        html = driver.execute_script("return document.documentElement.outerHTML")
        urls = driver.execute_script(
            "return Array.from(document.querySelectorAll('[src],[href]')).map(e => e.src || e.href)"
        )
        for name in MODELS:
            assert name not in html and not any(name in u for u in urls)
        # the clips load (metadata) and one plays
        wait_until(
            lambda: driver.execute_script(
                "return Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)"
            )
        )
        assert (
            driver.execute_script("return document.querySelectorAll('#side-a audio').length") == 2
        )  # user + reply
        driver.find_element("css selector", ".play-side[data-side='a']").click()
        wait_until(
            lambda: driver.execute_script(
                "return Array.from(document.querySelectorAll('#side-a audio')).some(a => a.currentTime > 0)"
            )
        )
        # rate three trials, one criterion left for the last: next stays disabled until all are given
        rated = []
        for _ in range(3):
            rated.append(driver.find_element("id", "trial").get_attribute("data-trial"))
            for criterion, winner in zip(CRITERIA, ["a", "b", "tie", "a"], strict=True):
                assert not driver.find_element("id", "next").is_enabled()
                driver.find_element("css selector", f"input[name='c-{criterion}'][value='{winner}']").click()
            driver.find_element("id", "next").click()
        # progress survives a reload
        driver.refresh()
        wait_until(lambda: driver.find_element("id", "rater").get_attribute("value") == "ana")
        driver.find_element("id", "begin").click()
        wait_until(lambda: driver.find_element("id", "progress").text.startswith("3 /"))
        assert driver.find_element("id", "trial").get_attribute("data-trial") not in rated
        driver.find_element("id", "export").click()
        href = wait_until(lambda: driver.find_element("id", "export-link").get_attribute("href"))
        exported = driver.execute_async_script(
            "fetch(arguments[0]).then(r => r.text()).then(arguments[arguments.length - 1])", href
        )
        assert console_errors(driver) == []
    lines = [json.loads(x) for x in exported.splitlines()]
    assert len(lines) == 3 * len(CRITERIA)
    assert {x["trial"] for x in lines} == set(rated)
    assert all(x["study"] == key["study_id"] and x["rater"] == "ana" for x in lines)
    assert [x["winner"] for x in lines[:4]] == ["a", "b", "tie", "a"]


def test_build_refuses_runs_that_share_nothing(tmp_path: Path, runs: list[Path]) -> None:
    other = make_run(tmp_path / "other", "echo-voice", 0)
    with pytest.raises(EvalkitError, match="share no answered item"):
        build_study([runs[0], other], tmp_path / "s")
    with pytest.raises(EvalkitError, match="at least two runs"):
        build_study([runs[0]], tmp_path / "s")
    assert not (tmp_path / "s").exists()


# -- analyze --------------------------------------------------------------------------------------------
def test_analyze_recovers_the_planted_ranking_from_the_page_export(
    study: Path, runs: list[Path], tmp_path: Path
) -> None:
    key = load_key(study)
    votes = tmp_path / "votes.jsonl"
    votes.write_text("".join(json.dumps(x) + "\n" for x in simulated_votes(key)), encoding="utf-8")
    results = analyze([votes], tmp_path / "out", studies=[study], runs=runs, resamples=RESAMPLES)
    check_recovered(results)
    # the runs' listener metric follows the planted ranking: it agrees with the people
    listener = results["automatic"]["listener/listener_naturalness"]["overall"]
    assert listener["n_units"] == 12 * 6
    assert listener["pairwise_accuracy"] > 0.6 and listener["kendall_tau"] > 0.2
    low, high = listener["pairwise_accuracy_ci"]
    assert low < listener["pairwise_accuracy"] < high
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    page = (tmp_path / "out" / "results.html").read_text()
    assert "random-clicker" in page and "openai:alpha-voice" in page


def test_analyze_recovers_the_planted_ranking_from_a_csv(study: Path, tmp_path: Path) -> None:
    """The same votes written as the CSV a study run elsewhere would give: models by name, the
    planted side as @planted, repeats as a second row for the same item and pair."""
    key = load_key(study)
    path = tmp_path / "votes.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rater", "item", "a", "b", "winner", "criterion"])
        for v in simulated_votes(key):
            trial = key["trials"][v["trial"]]
            writer.writerow([v["rater"], trial["item"], trial["a"], trial["b"], v["winner"], v["criterion"]])
    check_recovered(analyze([path], tmp_path / "out", resamples=RESAMPLES))


def test_attention_checks_exclude_a_contradicting_rater_and_keep_a_consistent_one(tmp_path: Path) -> None:
    rows = ["rater,item,a,b,winner"]
    for item in ("i1", "i2", "i3"):
        rows += [f"flip,{item},x,y,a", f"flip,{item},y,x,a"]  # the side, not the model: contradicts
        rows += [f"steady,{item},x,y,a", f"steady,{item},y,x,b"]
    rows += ["steady,i4,x,@planted,a", "flip,i4,x,@planted,a"]
    path = tmp_path / "v.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    results = analyze([path], tmp_path / "out", resamples=RESAMPLES)
    assert results["raters"]["excluded"] == [
        {"rater": "flip", "reasons": ["contradicted themselves on 3 of 3 repeated pairs"]}
    ]
    overall = results["criteria"]["overall"]
    assert overall["n_comparisons"] == 3  # steady's first vote per pair; the planted pair never counts
    assert overall["ranking"] == ["x", "y"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rater,item,a\nr,i,x\n", "missing column"),
        ("rater,item,a,b,winner\nr,i,x,y,left\n", "winner 'left'"),
    ],
)
def test_bad_vote_files_are_one_line_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "v.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EvalkitError, match=problem):
        analyze([path], tmp_path / "out")


def test_page_votes_need_their_study_key(study: Path, tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    path.write_text(
        json.dumps({"study": "nope", "rater": "r", "trial": "t001", "criterion": "overall", "winner": "a"})
        + "\n"
    )
    with pytest.raises(EvalkitError, match="pass its folder with --study"):
        analyze([path], tmp_path / "out", studies=[study])


# -- serve ------------------------------------------------------------------------------------------------
def test_serve_stores_votes_in_sqlite_and_never_serves_the_key(
    study: Path, runs: list[Path], tmp_path: Path
) -> None:
    from evalkit.study.serve import make_server

    db = tmp_path / "votes.sqlite"
    server = make_server(study, port=0, db=db)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    key = load_key(study)
    try:
        assert urllib.request.urlopen(f"{base}/index.html").status == 200
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"{base}/key.json")
        # r1 goes back and changes their answer: the latest one stands
        for rater, winner in (("r1", "a"), ("r2", "a"), ("r1", "b")):
            body = {
                "study": key["study_id"],
                "rater": rater,
                "trial": "t001",
                "votes": dict.fromkeys(CRITERIA, winner),
            }
            request = urllib.request.Request(
                f"{base}/api/votes", data=json.dumps(body).encode(), method="POST"
            )
            request.add_header("Content-Type", "application/json")
            assert json.loads(urllib.request.urlopen(request).read()) == {"stored": 4}
        bad = urllib.request.Request(f"{base}/api/votes", data=b'{"study": "x"}', method="POST")
        with pytest.raises(urllib.error.HTTPError, match="400"):
            urllib.request.urlopen(bad)
    finally:
        server.shutdown()
        server.server_close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT rater) FROM votes").fetchone() == (12, 2)
    results = analyze([db], tmp_path / "out", studies=[study], resamples=RESAMPLES)
    overall = results["criteria"]["overall"]
    assert overall["n_comparisons"] == 2
    assert overall["models"][key["trials"]["t001"]["a"]]["win_rate"] == 0.5  # r2's a, r1's latest b
    assert results["raters"]["checks"][0]["repeats"] == 0  # a changed answer is not a repeat
    rebuilt = tmp_path / "again"
    build_study(runs[:2], rebuilt)
    (rebuilt / "votes.sqlite").write_bytes(db.read_bytes())  # served there: a rebuild would lose them
    with pytest.raises(EvalkitError, match="holds the votes"):
        build_study(runs[:2], rebuilt)


# -- export-preferences ----------------------------------------------------------------------------------
def test_exported_preferences_load_with_datasets_in_trl_layout(study: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from evalkit.study.preferences import export_preferences

    key = load_key(study)
    votes = tmp_path / "votes.jsonl"
    votes.write_text("".join(json.dumps(x) + "\n" for x in simulated_votes(key)), encoding="utf-8")
    counts = export_preferences(tmp_path / "prefs.jsonl", votes=[votes], studies=[study])
    assert counts["n_pairs"] + counts["n_even"] == 12 * 6
    data = datasets.load_dataset("json", data_files=str(tmp_path / "prefs.jsonl"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(data.column_names)
    assert {"chosen_model", "rejected_model", "source", "item", "chosen_audio", "preference"} <= set(
        data.column_names
    )
    row = data[0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["chosen"][0]["content"].endswith(row["chosen_model"].split(":")[-1])
    assert Path(row["chosen_audio"][0]).is_file() and Path(row["prompt_audio"][0]).is_file()
    assert row["source"] == "human" and row["study"] == key["study_id"] and row["preference"] > 0.5
    best = sum(r["chosen_model"].endswith("alpha-voice") for r in data)
    assert best >= sum(r["rejected_model"].endswith("alpha-voice") for r in data)


# -- the arena judge ----------------------------------------------------------------------------------------
def arena_answer(body: dict[str, Any]) -> str:
    """The scripted judge: prefers the reply with the larger number of 'stars' it reads, always
    says side A on naturalness (a position-biased criterion), ties on nothing else."""
    content = body["messages"][0]["content"]  # a text-only message travels as one string
    text = content if isinstance(content, str) else "\n".join(p.get("text", "") for p in content)
    found = re.search(
        r"Assistant A, turn 1:\s*(.*?)\s*Assistant B, turn 1:\s*(.*?)\s*Answer with", text, re.S
    )
    assert found, text
    a_reply, b_reply = found.groups()
    better = "A" if a_reply.count("*") > b_reply.count("*") else "B"
    verdict = {c: better for c in CRITERIA}
    verdict["naturalness"] = "A"
    return json.dumps({**verdict, "justification": "more stars"})


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """Three real runs (the runner, against the loopback server) whose answers have 3, 2 and 1 stars."""
    from evalkit.runner import RunConfig, evaluate

    base = tmp_path_factory.mktemp("arena-runs")
    data = base / "q.jsonl"
    rows = [
        {"id": f"q{i}", "task": "t", "conversation": [{"role": "user", "text": f"Say {i}."}]}
        for i in range(4)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = []
    for stars, name in ((3, "m-three"), (2, "m-two"), (1, "m-one")):
        with OpenAIServer(model=name, answer=lambda body, s=stars: "answer " + "*" * s) as server:
            store = evaluate(
                RunConfig(
                    model=f"openai:{name}@{server.base_url}",
                    tasks=f"jsonl:path={data},judges=numeric",
                    out_dir=str(base / name),
                    use_cache=False,
                ),
                argv=["test"],
                show_progress=False,
            )
        out.append(store.root)
    yield out


def test_arena_judges_both_orders_ranks_models_and_agrees_with_people(
    text_runs: list[Path], tmp_path: Path
) -> None:
    from evalkit.study.arena import run_arena
    from evalkit.study.preferences import export_preferences

    studied = load_study_runs(text_runs)
    labels, items = [r.label for r in studied], sorted(studied[0].items)
    votes = tmp_path / "human.csv"
    rows = ["rater,item,a,b,winner"]
    for i, item in enumerate(items):  # people agree with the stars on three items, disagree on one
        rows += [
            f"p1,{item},{labels[0]},{labels[1]},{'a' if i else 'b'}",
            f"p1,{item},{labels[1]},{labels[2]},a",
        ]
    votes.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with OpenAIServer(model="judge", answer=arena_answer) as judge:
        results = run_arena(
            text_runs, f"openai:judge@{judge.base_url}", tmp_path / "arena", mode="text",
            votes=[votes], resamples=RESAMPLES, use_cache=False,
        )  # fmt: skip
        assert judge.hits == 4 * 3 * 2  # items x pairs x both orders
        first = judge.requests[0].body["messages"][0]["content"]
    assert "Assistant A, turn 1:\nanswer *" in first and "Say " in first  # the replies and the user, as text
    overall = results["criteria"]["overall"]
    assert [m.split(":")[-1] for m in overall["ranking"]] == ["m-three", "m-two", "m-one"]
    # naturalness: always "A", whichever run is shown first: both orders cancel to ties
    assert all(
        v == 0.5 for row in results["criteria"]["naturalness"]["pairwise"].values() for v in row.values()
    )
    assert results["judge"]["position_consistency"] == pytest.approx(0.75)
    agree = results["agreement"]["overall"]
    assert agree["n_units"] == 8 and agree["pairwise_accuracy"] == pytest.approx(7 / 8)
    low, high = agree["pairwise_accuracy_ci"]
    assert low <= 7 / 8 <= high
    assert agree["kendall_tau"] is not None
    lines = [json.loads(x) for x in (tmp_path / "arena" / "arena.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and all("error" not in x for x in lines)
    assert (tmp_path / "arena" / "calls" / "judge.jsonl").is_file()
    counts = export_preferences(tmp_path / "arena.jsonl", arena=tmp_path / "arena")
    assert counts["n_pairs"] == 12
    row = json.loads((tmp_path / "arena.jsonl").read_text().splitlines()[0])
    assert row["source"] == "arena" and row["judge"].startswith("openai:judge")
    assert row["chosen"][0]["content"].count("*") > row["rejected"][0]["content"].count("*")


def test_arena_is_registered_and_refuses_a_single_run() -> None:
    from evalkit.judges.base import load_judge  # noqa: F401 - the registry path a run uses
    from evalkit.registry import judges

    cls = judges.get("arena")
    judge = cls("openai:judge@http://127.0.0.1:9/v1", mode="text")
    score = judge.score(
        Sample(id="s", task="t", conversation=[Turn(role="user", text="hi")]), [ModelOutput(text="x")]
    )
    assert score.error is not None and "evalkit study arena" in score.error.message


# -- the leaderboard -------------------------------------------------------------------------------------
def test_leaderboard_shows_study_ratings_with_cis_and_links_the_models(
    text_runs: list[Path], tmp_path: Path
) -> None:
    from evalkit.leaderboard.site import build_site
    from evalkit.leaderboard.tables import slugify

    studied = load_study_runs(text_runs)
    labels, items = [r.label for r in studied], sorted(studied[0].items)
    rows = ["rater,item,a,b,winner"]
    for rater in ("p1", "p2"):
        for item in items:
            rows += [f"{rater},{item},{labels[0]},{labels[1]},a", f"{rater},{item},{labels[1]},{labels[2]},a"]
    votes = tmp_path / "votes.csv"
    votes.write_text("\n".join(rows) + "\n", encoding="utf-8")
    analyze([votes], tmp_path / "human-study", resamples=RESAMPLES)
    index = build_site(text_runs, tmp_path / "site", studies=[tmp_path / "human-study"])
    page = index.read_text(encoding="utf-8")
    assert "Preference studies" in page and "human votes (2 raters, 0 excluded)" in page
    table = page[page.index('id="t-study-1"') :]
    table = table[: table.index("</table>")]
    assert f'href="models/{slugify(labels[0])}.html"' in table
    assert re.search(r"\d{3,4} <span class=\"note\">\[\d{3,4}, \d{3,4}\]</span>", table)
    assert table.index(labels[0]) < table.index(labels[1]) < table.index(labels[2])  # best first
    data = json.loads((tmp_path / "site" / "data" / "leaderboard.json").read_text())
    assert data["studies"][0]["kind"] == "human" and data["studies"][0]["criteria"] == ["overall"]
    with pytest.raises(EvalkitError, match="not study results"):
        build_site(text_runs, tmp_path / "site2", studies=[tmp_path / "site" / "data" / "leaderboard.json"])


def test_arena_in_audio_mode_hears_every_side_and_cancels_a_position_bias(
    runs: list[Path], tmp_path: Path
) -> None:
    """A judge that always says "A" prefers a position, not a voice: both orders cancel to ties."""
    from evalkit.study.arena import run_arena

    def always_a(body: dict[str, Any]) -> str:
        parts = body["messages"][0]["content"]
        labels = [b["text"] for b, p in zip(parts, parts[1:], strict=False) if p["type"] == "input_audio"]
        assert labels == ["User turn 1:", "Assistant A, turn 1:", "Assistant B, turn 1:"], labels
        assert "HEAR" in parts[0]["text"] and "reply 0" not in json.dumps(body)  # heard, not read
        return json.dumps({**dict.fromkeys(CRITERIA, "A"), "justification": "A is first"})

    with OpenAIServer(model="ear", answer=always_a) as judge:
        results = run_arena(
            runs[:2], f"openai:ear@{judge.base_url}", tmp_path / "arena", resamples=RESAMPLES, use_cache=False
        )
        assert judge.hits == 12 * 2
    assert results["judge"]["position_consistency"] == 0.0 and results["judge"]["n_errors"] == 0
    for criterion in CRITERIA:
        (rates,) = {m["win_rate"] for m in results["criteria"][criterion]["models"].values()}
        assert rates == 0.5


# -- the command line -------------------------------------------------------------------------------------
def test_study_commands_build_analyze_export_and_fail_in_one_line(runs: list[Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evalkit.cli import app

    cli = CliRunner()
    built = cli.invoke(app, ["study", "build", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "s")])
    assert built.exit_code == 0, built.output
    assert "key (keep private" in built.output and (tmp_path / "s" / "index.html").is_file()
    key = load_key(tmp_path / "s")
    votes = tmp_path / "v.jsonl"
    votes.write_text(
        "".join(json.dumps(x) + "\n" for x in simulated_votes(key, n_honest=2)), encoding="utf-8"
    )
    args = ["--study", str(tmp_path / "s"), "--resamples", "50"]
    done = cli.invoke(app, ["study", "analyze", str(votes), "--out", str(tmp_path / "r"), *args])
    assert done.exit_code == 0, done.output
    assert "raters: 3 (1 excluded" in done.output and (tmp_path / "r" / "results.html").is_file()
    out = tmp_path / "p.jsonl"
    exported = cli.invoke(
        app,
        [
            "study",
            "export-preferences",
            "--format",
            "trl",
            "--votes",
            str(votes),
            "--study",
            str(tmp_path / "s"),
            "--out",
            str(out),
        ],
    )
    assert exported.exit_code == 0, exported.output
    assert "preference pairs" in exported.output and out.is_file()
    bad = cli.invoke(app, ["study", "analyze", str(votes), "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "error: " in bad.output and "--study" in bad.output
    wrong = cli.invoke(
        app, ["study", "export-preferences", "--format", "csv", "--votes", str(votes), "--out", str(out)]
    )
    assert wrong.exit_code == 2 and "known formats: trl" in wrong.output


@pytest.mark.skipif(not browser_available(), reason="needs selenium, chromium and chromedriver")
def test_the_served_page_sends_each_saved_pair_to_the_server(study: Path, tmp_path: Path) -> None:
    from evalkit.study.serve import make_server

    db = tmp_path / "votes.sqlite"
    server = make_server(study, port=0, db=db)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with headless_chromium() as driver:
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
            wait_until(lambda: "connected" in driver.find_element("id", "status").text)
            driver.find_element("id", "rater").send_keys("bo")
            driver.find_element("id", "begin").click()
            trial = wait_until(lambda: driver.find_element("id", "trial").get_attribute("data-trial"))
            for criterion in CRITERIA:
                driver.find_element("css selector", f"input[name='c-{criterion}'][value='b']").click()
            driver.find_element("id", "next").click()
            wait_until(lambda: driver.find_element("id", "status").text == "saved on the server")
            assert console_errors(driver) == []
    finally:
        server.shutdown()
        server.server_close()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT rater, trial, criterion, winner FROM votes ORDER BY id").fetchall()
    assert rows == [("bo", trial, c, "b") for c in CRITERIA]
