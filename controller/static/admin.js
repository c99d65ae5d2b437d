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

  // ---- receivers: register, download the bundle (new credentials), retire
  function download(url, body, filename) {
    return fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, "Content-Type": "application/json" }, body: JSON.stringify(body || {}) })
      .then(async (r) => {
        if (!r.ok) { const d = await r.json().catch(() => null); throw new Error((d && d.error && d.error.message_vi) || r.statusText); }
        const a = document.createElement("a");
        a.href = URL.createObjectURL(await r.blob()); a.download = filename;
        document.body.appendChild(a); a.click(); a.remove();
        status.textContent = T.downloaded; status.className = "status ready";
      });
  }
  document.querySelectorAll("#receivers tr[data-rx] button").forEach((b) => {
    b.addEventListener("click", () => {
      const id = b.closest("tr").dataset.rx;
      if (b.dataset.act === "bundle") {
        if (confirm(T.bundle)) download("/api/v1/receivers/" + id + "/bundle", {}, "loaxa-" + id + ".tar.gz").catch(fail);
      } else if (b.dataset.act === "move") {
        const area = prompt(T.move);
        if (area) api("PATCH", "/api/v1/receivers/" + id, { area: area.trim() }).then(() => done(true)).catch(fail);
      } else if (confirm(T.retire)) {
        api("POST", "/api/v1/receivers/" + id + "/retire").then(() => done(true)).catch(fail);
      }
    });
  });
  document.getElementById("new-receiver").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = e.target, body = { id: f.id.value.trim(), name: f.name.value.trim() || undefined, area: f.area.value };
    if (f.lat.value !== "") body.lat = Number(f.lat.value);
    if (f.lon.value !== "") body.lon = Number(f.lon.value);
    api("POST", "/api/v1/receivers", body)
      .then(() => download("/api/v1/receivers/" + body.id + "/bundle", { sink: f.sink.value }, "loaxa-" + body.id + ".tar.gz"))
      .then(() => setTimeout(() => location.reload(), 500)).catch(fail);
  });

  // ---- session templates and one-day extra sessions of the chosen area
  const areaSel = document.getElementById("sessions-area"), tbody = document.querySelector("#sessions-table tbody");
  const rowTpl = document.getElementById("session-row");
  function addRow(s) {
    const tr = rowTpl.content.firstElementChild.cloneNode(true);
    tr.querySelector(".s-name").value = s.name || ""; tr.querySelector(".s-key").value = s.key || "";
    tr.querySelector(".s-start").value = s.start || ""; tr.querySelector(".s-end").value = s.end || "";
    tr.querySelectorAll(".s-day").forEach((c) => { c.checked = (s.weekdays || [0, 1, 2, 3, 4, 5]).includes(Number(c.value)); });
    tr.querySelector(".s-del").addEventListener("click", () => tr.remove());
    tbody.appendChild(tr);
  }
  function sessions() {
    const area = areaSel.value;
    return api("GET", "/api/v1/areas/" + area + "/sessions").then((d) => {
      tbody.innerHTML = ""; d.sessions.forEach(addRow);
      document.getElementById("sessions-source").textContent = d.source === "area" ? T.own : T.default;
      const ul = document.getElementById("extra-list"); ul.innerHTML = "";
      d.extra.forEach((x) => {
        const li = document.createElement("li"), btn = document.createElement("button");
        li.textContent = x.date.split("-").reverse().join("/") + " " + x.start + "–" + x.end + " " + x.name + " ";
        btn.type = "button"; btn.textContent = T.remove_extra;
        btn.addEventListener("click", () => api("DELETE", "/api/v1/areas/" + area + "/extra-sessions/" + x.id).then(() => { done(); sessions(); }).catch(fail));
        li.appendChild(btn); ul.appendChild(li);
      });
    }).catch(fail);
  }
  function put(list) {
    return api("PUT", "/api/v1/areas/" + areaSel.value + "/sessions", { sessions: list }).then(() => { done(); sessions(); }).catch(fail);
  }
  areaSel.addEventListener("change", sessions);
  document.getElementById("session-add").addEventListener("click", () => addRow({ key: "buoi-" + (tbody.children.length + 1) }));
  document.getElementById("sessions-save").addEventListener("click", () => {
    put([...tbody.querySelectorAll("tr")].map((tr) => ({
      key: tr.querySelector(".s-key").value.trim(), name: tr.querySelector(".s-name").value.trim(),
      start: tr.querySelector(".s-start").value, end: tr.querySelector(".s-end").value,
      weekdays: [...tr.querySelectorAll(".s-day:checked")].map((c) => Number(c.value)) })));
  });
  document.getElementById("sessions-default").addEventListener("click", () => { if (confirm(T.restore)) put([]); });
  document.getElementById("extra-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = e.target;
    api("POST", "/api/v1/areas/" + areaSel.value + "/extra-sessions", { date: f.date.value, name: f.name.value.trim(),
      key: "bo-sung-" + f.start.value.replace(":", ""), start: f.start.value, end: f.end.value })
      .then(() => { f.name.value = ""; done(); sessions(); }).catch(fail);
  });
  sessions();
})();
