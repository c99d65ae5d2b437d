// Bulletins page: upload with a real progress bar (bytes, then transcoding percent),
// record from the microphone, type text to be read (listen first), list, listen, schedule.
(function () {
  "use strict";
  const T = JSON.parse(document.getElementById("texts").textContent);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (sel, root) => (root || document).querySelector(sel);

  function api(method, url, body) {
    const opts = { method, headers: { "X-CSRFToken": csrf }, credentials: "same-origin" };
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    return fetch(url, opts).then(async (r) => {
      const data = r.headers.get("Content-Type") === "application/json" ? await r.json() : null;
      if (!r.ok) throw new Error((data && data.error && data.error.message_vi) || r.statusText);
      return data;
    });
  }

  function say(el, text, cls) { el.textContent = text; el.className = "status " + (cls || ""); }

  // Upload a blob with XMLHttpRequest (fetch has no upload progress), then follow the transcoding.
  function upload(form, blob, name) {
    const bar = $("#upload-progress"), status = $("#upload-status");
    const data = new FormData();
    data.append("title", form.title.value);
    data.append("area", form.area.value);
    data.append("file", blob, name);
    bar.hidden = false; bar.value = 0;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/bulletins");
    xhr.setRequestHeader("X-CSRFToken", csrf);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) { bar.value = Math.round(e.loaded / e.total * 50); say(status, T.uploading + " " + Math.round(e.loaded / e.total * 100) + "%"); }
    };
    xhr.onerror = () => say(status, T.network, "failed");
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status !== 202) {
        bar.hidden = true;
        say(status, (data && data.error && data.error.message_vi) || (xhr.status === 413 ? T.too_large : T.network), "failed");
        return;
      }
      follow(data.bulletin.id, bar, status);
    };
    xhr.send(data);
  }

  function follow(id, bar, status) {
    api("GET", "/api/v1/bulletins/" + id).then((d) => {
      const b = d.bulletin;
      if (b.status === "ready") { bar.value = 100; say(status, T.ready + ": " + b.title, "ready"); load(); return; }
      if (b.status === "failed") { bar.hidden = true; say(status, T.failed + ": " + ((b.error && b.error.message_vi) || ""), "failed"); load(); return; }
      // Full only when the bulletin is ready: processing at 99 % rounded up to a full bar before.
      bar.value = Math.min(99, 50 + Math.floor((b.progress || 0) / 2));
      say(status, (b.status === "queued" ? T.queued : T.processing) + " " + (b.progress || 0) + "%");
      setTimeout(() => follow(id, bar, status), 700);
    }).catch((e) => say(status, e.message, "failed"));
  }

  const form = $("#upload-form");
  if (form) {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const file = form.file.files[0];
      if (!file) { form.file.focus(); return; }
      if (!form.title.value) form.title.value = file.name.replace(/\.[^.]+$/, "");
      upload(form, file, file.name);
    });
    let recorder = null, chunks = [];
    $("#rec").addEventListener("click", async (e) => {
      const button = e.currentTarget;
      if (recorder) { recorder.stop(); return; }
      try {
        // The pipeline normalises loudness afterwards; the browser's gain control would only pump the level.
        const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, autoGainControl: false, noiseSuppression: true } });
        recorder = new MediaRecorder(stream);
        chunks = [];
        recorder.ondataavailable = (ev) => chunks.push(ev.data);
        recorder.onstop = () => {
          stream.getTracks().forEach((t) => t.stop());
          button.classList.remove("on");
          const type = recorder.mimeType || "audio/webm";
          recorder = null;
          if (!form.title.value) form.title.value = T.recorded + " " + new Date().toLocaleString("vi-VN");
          upload(form, new Blob(chunks, { type }), type.includes("ogg") ? "ghi-am.ogg" : "ghi-am.webm");
        };
        recorder.start();
        button.classList.add("on");
        say($("#upload-status"), T.recording);
      } catch (err) { say($("#upload-status"), T.no_mic, "failed"); }
    });
  }

  const tts = $("#tts-form");
  if (tts) {
    api("GET", "/api/v1/tts/engines").then((d) => {
      (d.engines || []).forEach((name) => {
        const o = document.createElement("option"); o.value = name; o.textContent = name; $("#engine").appendChild(o);
      });
    }).catch(() => {});
    const body = () => ({ title: tts.title.value, area: tts.area.value, text: tts.text.value,
                          ...(tts.engine.value ? { engine: tts.engine.value } : {}) });
    $("#tts-preview").addEventListener("click", () => {
      say($("#tts-status"), T.processing);
      fetch("/api/v1/bulletins/tts/preview", { method: "POST", credentials: "same-origin",
        headers: { "X-CSRFToken": csrf, "Content-Type": "application/json" }, body: JSON.stringify(body()) })
        .then(async (r) => {
          if (!r.ok) { const d = await r.json(); throw new Error(d.error.message_vi); }
          const engine = r.headers.get("X-Loaxa-TTS-Engine");
          const audio = $("#tts-audio"); audio.src = URL.createObjectURL(await r.blob()); audio.hidden = false; audio.play().catch(() => {});
          say($("#tts-status"), engine ? T.ready + " (" + engine + ")" : T.ready, "ready");
        }).catch((e) => say($("#tts-status"), e.message, "failed"));
    });
    tts.addEventListener("submit", (e) => {
      e.preventDefault();
      api("POST", "/api/v1/bulletins/tts", body())
        .then((d) => follow(d.bulletin.id, $("#upload-progress"), $("#tts-status")))
        .catch((err) => say($("#tts-status"), err.message, "failed"));
    });
  }

  function wave(canvas, peaks) {
    const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h); ctx.fillStyle = "#2b6cb0";
    if (!peaks || !peaks.length) return;
    const step = w / peaks.length;
    peaks.forEach((p, i) => { const v = Math.max(1, Math.abs(p) * h); ctx.fillRect(i * step, (h - v) / 2, Math.max(1, step - 0.5), v); });
  }

  function nextDay(iso) {
    const d = new Date(iso + "T12:00:00Z"); d.setUTCDate(d.getUTCDate() + 1); return d.toISOString().slice(0, 10);
  }

  // The sessions of an area on a day, from the server: its templates for that weekday and the
  // extra sessions added for that date (storm season), in the order they play.
  const sessionLists = {};
  function fillSessions(select, area, day) {
    sessionLists[area] = sessionLists[area] || api("GET", "/api/v1/areas/" + encodeURI(area) + "/sessions");
    return sessionLists[area].then((d) => {
      const weekday = (new Date(day + "T12:00:00Z").getUTCDay() + 6) % 7;  // 0 = Monday, as the server counts
      let list = d.sessions.filter((s) => s.weekdays.includes(weekday))
        .concat(d.extra.filter((x) => x.date === day)).sort((x, y) => x.start.localeCompare(y.start));
      const now = new Intl.DateTimeFormat("en-GB", { timeZone: document.body.dataset.tz, hour: "2-digit",
                                                     minute: "2-digit", hourCycle: "h23" }).format(new Date());
      select.innerHTML = "";
      // Today, only the sessions that have not ended: one that has can no longer play it (the server refuses).
      list = list.filter((s) => day !== document.body.dataset.today || s.end > now);
      list.forEach((s) => {
        const o = document.createElement("option");
        o.value = s.key; o.textContent = s.name + " (" + s.start + "–" + s.end + ")"; select.appendChild(o);
      });
      if (!list.length) {
        const o = document.createElement("option"); o.textContent = select.dataset.none; o.disabled = true;
        select.appendChild(o);
      }
      return list.length;
    }).catch(() => 0);
  }

  // Drafts that play this bulletin: when and where, with approve / reject for those who may decide.
  function pendingList(ul, drafts) {
    drafts.forEach((p) => {
      const li = document.createElement("li"); li.dataset.item = p.id;
      const when = (T.sessions[p.session] || p.session || "") + " " +
        (p.day ? p.day.split("-").reverse().join("/") : (p.mode === "daily" ? T.daily : ""));
      li.append(T.pending + ": " + when.trim() + " ");
      if (p.can_decide) {
        [["approve", T.approve], ["reject", T.reject]].forEach(([act, label]) => {
          const b = document.createElement("button"); b.type = "button"; b.className = act; b.textContent = label;
          b.addEventListener("click", () => api("POST", "/api/v1/programme/items/" + p.id + "/" + act, {})
            // The server says where it goes when that is not the plain answer (its session is on air).
            .then((r) => { li.textContent = act === "approve" ? [T.approved, r && r.notice_vi].filter(Boolean).join(" ") : T.rejected; })
            .catch((e) => { li.append(" " + e.message); }));
          li.append(b, " ");
        });
      }
      ul.appendChild(li);
    });
  }

  function load() {
    Object.keys(sessionLists).forEach((area) => delete sessionLists[area]);  // sessions may have been added
    api("GET", "/api/v1/bulletins").then((d) => {
      const tbody = $("#bulletins tbody"); tbody.innerHTML = "";
      const tpl = $("#row-template");
      d.bulletins.forEach((b) => {
        const row = tpl.content.firstElementChild.cloneNode(true);
        row.dataset.bulletin = b.id; row.dataset.status = b.status;
        $(".title", row).textContent = b.title;
        say($(".status", row), T[b.status] || b.status, b.status);
        if (b.error) $(".status", row).title = b.error.message_vi || "";
        pendingList($(".pending", row), b.pending || []);
        const canvas = $("canvas", row), audio = $("audio", row);
        if (b.media) {
          audio.src = b.media.url; audio.hidden = false;
          api("GET", "/api/v1/bulletins/" + b.id).then((one) => wave(canvas, one.bulletin.media && one.bulletin.media.peaks));
          canvas.addEventListener("click", (ev) => {
            const r = canvas.getBoundingClientRect();
            audio.currentTime = (ev.clientX - r.left) / r.width * (b.media.duration_ms / 1000); audio.play().catch(() => {});
          });
        } else { canvas.hidden = true; }
        const button = $(".schedule", row);
        if (button) {
          const day = $(".day", row); day.value = document.body.dataset.today;  // the station's local date
          button.disabled = true;
          // First offer the next day that still has a session to come (tonight: tomorrow; Saturday night: Monday).
          const sessions = (ahead) => fillSessions($(".session", row), b.area, day.value).then((n) => {
            if (!n && ahead > 0) { day.value = nextDay(day.value); return sessions(ahead - 1); }
            button.disabled = b.status !== "ready" || !n;
          });
          day.addEventListener("change", () => sessions(0));
          sessions(7);
          button.addEventListener("click", () => {
            api("POST", "/api/v1/programme/items", { bulletin_id: b.id, area: b.area, session: $(".session", row).value,
                                                     mode: "once", date: day.value })
              // "Đã xếp lịch" only when nothing more is to be said: a session on air places it later, and says when.
              .then((r) => say($(".status", row), r.notice_vi || (r.item.status === "approved" ? T.scheduled : T.draft), "ready"))
              .catch((e) => say($(".status", row), e.message, "failed"));
          });
        }
        tbody.appendChild(row);
      });
      filter();
    });
  }

  function filter() {
    const q = $("#search").value.toLowerCase(), st = $("#filter").value;
    document.querySelectorAll("#bulletins tbody tr").forEach((tr) => {
      const okText = !q || $(".title", tr).textContent.toLowerCase().includes(q);
      const okStatus = !st || tr.dataset.status === st || (st === "processing" && tr.dataset.status === "queued");
      tr.hidden = !(okText && okStatus);
    });
  }
  $("#search").addEventListener("input", filter);
  $("#filter").addEventListener("change", filter);
  load();
})();
