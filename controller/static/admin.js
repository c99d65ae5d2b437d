// Administration page: area tree actions and users, through the JSON API with the page's CSRF token.
(function () {
  "use strict";
  const T = JSON.parse(document.getElementById("admin-texts").textContent);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("admin-status");
  function api(method, url, body) {
    return fetch(url, { method, credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body) })
      .then(async (r) => {
        const data = r.status === 204 ? null : await r.json();
        if (!r.ok) throw new Error((data && data.error && data.error.message_vi) || r.statusText);
        return data;
      });
  }
  function done(reload) { status.textContent = T.done; status.className = "status ready"; if (reload) location.reload(); }
  function fail(e) { status.textContent = e.message; status.className = "status failed"; }

  document.querySelectorAll("li[data-area] > .row-actions button").forEach((b) => {
    b.addEventListener("click", () => {
      const id = b.closest("li").dataset.area;
      if (b.dataset.act === "rename") {
        const name = prompt(T.rename); if (name) api("PATCH", "/api/v1/areas/" + id, { name }).then(() => done(true)).catch(fail);
      } else if (b.dataset.act === "merge") {
        const into = prompt(T.merge); if (into) api("POST", "/api/v1/areas/" + id + "/merge", { into }).then(() => done(true)).catch(fail);
      } else {
        const child = prompt(T.child_id); if (!child) return;
        const name = prompt(T.child_name); if (!name) return;
        const parentLevel = b.closest("li").dataset.level;
        // Since 2025 a province may hold communes directly, so a province asks which level.
        const level = parentLevel === "district" ? "commune" : (prompt(T.child_level, "commune") || "").trim();
        api("POST", "/api/v1/areas", { id: child, name, level, parent: id }).then(() => done(true)).catch(fail);
      }
    });
  });

  function users() {
    api("GET", "/api/v1/users").then((d) => {
      const tbody = document.querySelector("#users tbody"); tbody.innerHTML = "";
      d.users.forEach((u) => {
        const tr = document.createElement("tr"); tr.dataset.user = u.id;
        [u.username, u.role, u.area || "*", u.active ? T.active : T.inactive].forEach((v) => {
          const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
        });
        const td = document.createElement("td"), btn = document.createElement("button");
        btn.textContent = u.active ? T.lock : T.unlock;
        btn.addEventListener("click", () => api("PATCH", "/api/v1/users/" + u.id, { active: !u.active }).then(() => { done(); users(); }).catch(fail));
        td.appendChild(btn); tr.appendChild(td); tbody.appendChild(tr);
      });
    }).catch(fail);
  }
  document.getElementById("new-user").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = e.target;
    api("POST", "/api/v1/users", { username: f.username.value, password: f.password.value, role: f.role.value,
                                   area: f.area.value || null })
      .then(() => { f.reset(); done(); users(); }).catch(fail);
  });
  users();
})();
