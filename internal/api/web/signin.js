// The sign-in form of the error pages: an API token opens a browser
// session (POST /v1/session), then the page the visitor asked for reloads.
"use strict";
document.getElementById("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/v1/session", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: document.getElementById("token").value }) });
  if (r.ok) { location.reload(); return; }
  const body = await r.json().catch(() => ({}));
  document.getElementById("signin-error").textContent = (body.error && body.error.message) || "sign-in failed";
});
