// The project page's Ask form: starts a consensus in the project and opens
// its live page.
"use strict";
const form = document.getElementById("ask-form");
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/v1/consensus", { method: "POST", headers: { "Content-Type": "application/json" },
    credentials: "same-origin", body: JSON.stringify({ prompt: document.getElementById("prompt").value, project: form.dataset.project,
      strategy: document.getElementById("strategy").value }) });
  const body = await r.json().catch(() => ({}));
  if (r.status === 202) { location.href = body.page_url; return; }
  document.getElementById("ask-error").textContent = (body.error && body.error.message) || `error ${r.status}`;
});
