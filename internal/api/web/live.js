// The live consensus page: it reads who is watching from /v1/me, follows the
// run over Server-Sent Events from /v1/consensus/{id}/events, and renders
// each state it receives. Guests see it read-only with their remaining quota;
// a project's owners and editors also see its guests.
"use strict";

const $ = (id) => document.getElementById(id);
const id = decodeURIComponent(location.pathname.split("/").pop());
const dollars = (micros) => "$" + (micros / 1e6).toFixed(6);
const pct = (x) => (x * 100).toFixed(0) + "%";

function text(el, s) { el.textContent = s == null ? "" : String(s); }

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  const body = await r.json().catch(() => ({}));
  return { status: r.status, body };
}

let me = null;
let project = null;

async function whoAmI() {
  const { status, body } = await getJSON("/v1/me");
  if (status === 401) {
    $("signin").hidden = false;
    text($("viewer"), "not signed in");
    return false;
  }
  me = body;
  if (me.kind === "guest") {
    const g = me.guest;
    $("viewer").innerHTML = "";
    $("viewer").append(`guest (${g.role}, read-only) of ${g.host} · quota remaining `);
    const b = document.createElement("b");
    b.id = "remaining";
    text(b, dollars(g.remaining_micros));
    $("viewer").append(b, ` of ${dollars(g.quota_micros)}`);
  } else {
    text($("viewer"), `signed in as ${me.account}`);
  }
  return true;
}

async function showGuests() {
  if (!project || !me || me.kind !== "account") return;
  const { status, body } = await getJSON(`/v1/projects/${encodeURIComponent(project)}/guests`);
  if (status !== 200) return;
  text($("guests-project"), project);
  const rows = $("guest-rows");
  rows.replaceChildren();
  for (const g of body.guests) {
    const tr = document.createElement("tr");
    for (const v of [g.session, g.role, dollars(g.quota_micros), dollars(g.remaining_micros)]) {
      const td = document.createElement("td");
      text(td, v);
      tr.append(td);
    }
    rows.append(tr);
  }
  $("guests").hidden = false;
  $("ask").hidden = false;
}

function renderRound(r, threshold) {
  let el = document.querySelector(`.round[data-round="${r.round}"]`);
  if (!el) {
    el = $("round-template").content.firstElementChild.cloneNode(true);
    el.dataset.round = r.round;
    text(el.querySelector(".n"), r.round);
    $("rounds").append(el);
  }
  if (r.solution) {
    const s = el.querySelector(".solution");
    s.classList.remove("muted");
    text(s, `${r.solution.answer} (confidence ${pct(r.solution.confidence)})`);
  }
  if (r.verification) {
    const v = r.verification;
    const sc = el.querySelector(".scores");
    sc.classList.remove("muted");
    text(sc, `accuracy ${pct(v.scores.accuracy)} · relevance ${pct(v.scores.relevance)} · safety ${pct(v.scores.safety)}` +
      (v.violations && v.violations.length ? ` · violations: ${v.violations.join(", ")}` : ""));
    text(el.querySelector(".feedback"), v.feedback ? `Feedback: ${v.feedback}` : "");
    const rs = el.querySelector(".round-score");
    text(rs, `score ${r.score.toFixed(3)}`);
    rs.className = "round-score " + (r.score >= threshold ? "pass" : "fail");
  }
}

function render(st) {
  $("run").hidden = false;
  text($("run-id"), id);
  text($("question"), st.question);
  text($("placement"), st.placement_note || st.placement || "");
  const status = $("status");
  text(status, st.status.replace("_", " "));
  status.className = "status " + st.status;
  text($("score-line"), st.steps ? `${st.steps} steps · threshold ${st.threshold}` : "");
  if (st.project && st.project !== project) {
    project = st.project;
    const a = $("project-link");
    text(a, `SuperInstance · ${project}`);
    a.href = `/p/${encodeURIComponent(project)}`;
    showGuests();
  }
  if (st.manifest) {
    $("pathos").hidden = false;
    text($("intent"), st.manifest.intent);
    text($("intent-meta"), `domain ${st.manifest.domain} · confidence ${pct(st.manifest.confidence)}` +
      (st.manifest.constraints && st.manifest.constraints.length ? ` · constraints: ${st.manifest.constraints.join("; ")}` : ""));
  }
  for (const r of st.rounds || []) renderRound(r, st.threshold);
  if (st.arbiter) {
    $("arbiter").hidden = false;
    text($("arbiter-answer"), st.arbiter.answer);
    text($("arbiter-note"), `${st.arbiter.note || ""} (confidence ${pct(st.arbiter.confidence)})`);
  }
  if (st.answer) {
    $("final").hidden = false;
    text($("answer"), st.answer);
  }
  text($("error"), st.error || "");
  document.body.dataset.status = st.status;
}

function follow() {
  const es = new EventSource(`/v1/consensus/${encodeURIComponent(id)}/events`);
  es.addEventListener("state", (e) => render(JSON.parse(e.data)));
  es.addEventListener("end", () => {
    es.close();
    document.body.dataset.done = "true";
    if (me && me.kind === "guest") whoAmI();
    showGuests();
  });
  es.addEventListener("error", (e) => {
    if (e.data) text($("error"), JSON.parse(e.data).message);
    if (es.readyState === EventSource.CLOSED || e.data) {
      es.close();
      if (!document.body.dataset.done) {
        getJSON(`/v1/consensus/${encodeURIComponent(id)}`).then(({ status, body }) => {
          if (status === 200) { render(body); document.body.dataset.done = "true"; }
          else text($("error"), (body.error && body.error.message) || `error ${status}`);
        });
      }
    }
  });
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/v1/session", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }) });
  if (r.ok) { location.reload(); return; }
  const body = await r.json().catch(() => ({}));
  text($("signin-error"), (body.error && body.error.message) || "sign-in failed");
});

$("ask-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/v1/consensus", { method: "POST", headers: { "Content-Type": "application/json" },
    credentials: "same-origin", body: JSON.stringify({ prompt: $("prompt").value, project: project || undefined }) });
  const body = await r.json().catch(() => ({}));
  if (r.status === 202) { location.href = body.page_url; return; }
  text($("ask-error"), (body.error && body.error.message) || `error ${r.status}`);
});

whoAmI().then((ok) => { if (ok) follow(); });
