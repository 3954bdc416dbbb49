// evalkit blind A/B listening study. Reads window.EVALKIT_STUDY (study-data.js): trial ids, sides
// "a"/"b" and clips under random names; it never sees which model is which (that is key.json,
// which this page never loads). Progress lives in localStorage per study and rater; votes export
// as JSONL lines {study, rater, trial, criterion, winner: "a"|"b"|"tie", at}. Served by
// `evalkit study serve`, each saved trial is also POSTed to api/votes (SQLite on the server).
(function () {
  "use strict";
  var S = window.EVALKIT_STUDY;
  var PREFIX = "evalkit-study:" + S.study_id + ":";
  var byId = {};
  S.trials.forEach(function (t) { byId[t.id] = t; });
  var state = { rater: null, order: [], pos: 0, votes: {} };
  var server = false;

  function $(id) { return document.getElementById(id); }

  // FNV-1a of the rater id seeds the per-rater order (mulberry32): two raters, two orders
  function hash(text) {
    var h = 2166136261;
    for (var i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 16777619); }
    return h >>> 0;
  }
  function random(seed) {
    return function () {
      seed = (seed + 0x6D2B79F5) | 0;
      var t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  function shuffled(ids, seed) {
    var out = ids.slice(), next = random(seed);
    for (var i = out.length - 1; i > 0; i--) {
      var j = Math.floor(next() * (i + 1)), x = out[i];
      out[i] = out[j]; out[j] = x;
    }
    return out;
  }

  function storageKey() { return PREFIX + state.rater + ":votes"; }
  function save() { localStorage.setItem(storageKey(), JSON.stringify(state.votes)); }
  function restore() {
    try { state.votes = JSON.parse(localStorage.getItem(storageKey()) || "{}"); }
    catch (e) { state.votes = {}; $("status").textContent = "saved progress could not be read; starting over"; }
  }

  function setStatus(text) { $("status").textContent = text; }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) { node.textContent = text; }
    return node;
  }

  function said(who, turn) {
    var box = el("div", { "class": "said" });
    box.appendChild(el("span", { "class": "who" }, who));
    if (turn.text) { box.appendChild(el("p", {}, turn.text)); }
    if (turn.audio) { box.appendChild(el("audio", { controls: "", preload: "metadata", src: turn.audio })); }
    return box;
  }

  function renderSide(side, trial) {
    var list = document.querySelector("#side-" + side + " .turns");
    list.textContent = "";
    trial[side].forEach(function (reply, k) {
      var li = el("li");
      li.appendChild(said("user, turn " + (k + 1), trial.users[k] || {}));
      li.appendChild(said("reply " + side.toUpperCase() + ", turn " + (k + 1), reply));
      list.appendChild(li);
    });
  }

  function renderCriteria(trial) {
    var body = document.querySelector("#criteria tbody");
    body.textContent = "";
    var given = state.votes[trial.id] || {};
    S.criteria.forEach(function (c) {
      var row = el("tr", { "data-criterion": c.id });
      var q = el("td", { "class": "question" });
      q.appendChild(el("strong", {}, c.label + ": "));
      q.appendChild(document.createTextNode(c.question));
      row.appendChild(q);
      ["a", "tie", "b"].forEach(function (w) {
        var cell = el("td");
        var input = el("input", { type: "radio", name: "c-" + c.id, value: w, "aria-label": c.label + " " + w });
        if (given[c.id] === w) { input.checked = true; }
        input.addEventListener("change", updateNext);
        cell.appendChild(input);
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
  }

  function chosen() {
    var out = {};
    S.criteria.forEach(function (c) {
      var box = document.querySelector('input[name="c-' + c.id + '"]:checked');
      if (box) { out[c.id] = box.value; }
    });
    return out;
  }
  function updateNext() { $("next").disabled = Object.keys(chosen()).length !== S.criteria.length; }

  function stopAll() {
    document.querySelectorAll("audio").forEach(function (a) { a.pause(); a.classList.remove("playing"); a.onended = null; });
  }
  function playInOrder(side) {
    stopAll();
    var clips = Array.prototype.slice.call(document.querySelectorAll("#side-" + side + " audio"));
    function play(i) {
      if (i >= clips.length) { return; }
      var clip = clips[i];
      clip.currentTime = 0;
      clip.classList.add("playing");
      clip.onended = function () { clip.classList.remove("playing"); play(i + 1); };
      var started = clip.play();
      if (started && started.catch) { started.catch(function (e) { setStatus("could not play: " + e.message); }); }
    }
    play(0);
  }

  function show(section) {
    ["start", "trial", "done"].forEach(function (s) { $(s).hidden = s !== section; });
  }

  function renderProgress() {
    var n = Object.keys(state.votes).length, total = S.trials.length;
    $("progress").textContent = n + " / " + total;
    $("progress-bar").max = total;
    $("progress-bar").value = n;
  }

  function render() {
    stopAll();
    renderProgress();
    if (state.pos >= state.order.length) { show("done"); return; }
    var trial = byId[state.order[state.pos]];
    show("trial");
    $("trial").setAttribute("data-trial", trial.id);
    renderSide("a", trial);
    renderSide("b", trial);
    renderCriteria(trial);
    updateNext();
    $("prev").disabled = state.pos === 0;
  }

  function send(trialId, votes) {
    if (!server) { return; }
    fetch("api/votes", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ study: S.study_id, rater: state.rater, trial: trialId, votes: votes }),
    }).then(function (r) {
      setStatus(r.ok ? "saved on the server" : "the server refused the vote (" + r.status + "); kept in this browser");
    }, function () { setStatus("the server is unreachable; kept in this browser, export it later"); });
  }

  function next() {
    var trial = byId[state.order[state.pos]];
    var votes = chosen();
    var at = new Date().toISOString();
    state.votes[trial.id] = {};
    Object.keys(votes).forEach(function (c) { state.votes[trial.id][c] = votes[c]; });
    state.votes[trial.id]._at = at;
    save();
    send(trial.id, votes);
    state.pos += 1;
    render();
  }

  function firstUnanswered() {
    for (var i = 0; i < state.order.length; i++) { if (!state.votes[state.order[i]]) { return i; } }
    return state.order.length;
  }

  function begin() {
    var rater = $("rater").value.trim();
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(rater)) { $("rater-problem").hidden = false; return; }
    $("rater-problem").hidden = true;
    state.rater = rater;
    localStorage.setItem(PREFIX + "rater", rater);
    state.order = shuffled(S.trials.map(function (t) { return t.id; }), hash(S.study_id + ":" + rater));
    restore();
    state.pos = firstUnanswered();
    render();
  }

  // one JSONL line per (trial, criterion), in the study's own trial order
  function exportText() {
    var lines = [];
    S.trials.forEach(function (t) {
      var v = state.votes[t.id];
      if (!v) { return; }
      S.criteria.forEach(function (c) {
        if (v[c.id]) {
          lines.push(JSON.stringify({ study: S.study_id, rater: state.rater, trial: t.id, criterion: c.id, winner: v[c.id], at: v._at }));
        }
      });
    });
    return lines.join("\n") + (lines.length ? "\n" : "");
  }

  function exportVotes() {
    if (!state.rater) { setStatus("start with your rater id first"); return; }
    var link = $("export-link");
    if (link.href) { URL.revokeObjectURL(link.href); }
    link.href = URL.createObjectURL(new Blob([exportText()], { type: "application/jsonl" }));
    link.download = "votes-" + S.study_id + "-" + state.rater + ".jsonl";
    link.hidden = false;
    link.click();
    setStatus("exported " + Object.keys(state.votes).length + " rated pairs");
  }

  window.evalkitStudy = { exportText: exportText, state: state };

  document.title = S.title;
  $("title").textContent = S.title;
  $("rater").value = localStorage.getItem(PREFIX + "rater") || "";
  $("begin").addEventListener("click", begin);
  $("next").addEventListener("click", next);
  $("prev").addEventListener("click", function () { if (state.pos > 0) { state.pos -= 1; render(); } });
  $("export").addEventListener("click", exportVotes);
  document.querySelectorAll(".play-side").forEach(function (b) {
    b.addEventListener("click", function () { playInOrder(b.getAttribute("data-side")); });
  });
  renderProgress();
  show("start");
  if (location.protocol.indexOf("http") === 0) {
    fetch("api/ping").then(function (r) { return r.ok ? r.json() : null; }).then(function (body) {
      server = !!(body && body.study === S.study_id);
      if (server) { setStatus("connected: votes are also saved on the study server"); }
    }, function () { server = false; });
  }
})();
