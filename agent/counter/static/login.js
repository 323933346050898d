"use strict";
(function () {
  const t = JSON.parse(document.getElementById("strings").textContent);
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const body = {
      name: document.getElementById("name").value,
      password: document.getElementById("password").value,
    };
    const r = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    if (r.ok) {
      window.location.assign("/");
    } else {
      error.textContent = r.status === 429 ? t.locked : t.wrong_password;
    }
  });
})();
