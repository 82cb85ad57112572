// The dashboard's only script: sign in (an API token opens a browser
// session; the token is not kept) and sign out. Everything else is drawn
// on the server.
"use strict";
(function () {
  const form = document.getElementById("signin-form");
  if (form) {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const out = document.getElementById("signin-error");
      out.textContent = "";
      const token = document.getElementById("token").value.trim();
      try {
        const r = await fetch("/v1/session", {method: "POST", headers: {"Content-Type": "application/json"},
          body: JSON.stringify({token}), credentials: "same-origin"});
        if (r.ok) { location.reload(); return; }
        let msg = "Signing in failed (" + r.status + ").";
        try { msg = (await r.json()).error.message || msg; } catch (_) {}
        out.textContent = msg.charAt(0).toUpperCase() + msg.slice(1) + (r.status === 401 ? ": check the token, or issue a new one with si account token." : "");
      } catch (err) {
        out.textContent = "The mesh could not be reached: " + err.message;
      }
    });
  }
  const signout = document.getElementById("signout");
  if (signout) {
    signout.addEventListener("click", async () => {
      await fetch("/v1/session", {method: "DELETE", credentials: "same-origin"});
      location.reload();
    });
  }
})();
