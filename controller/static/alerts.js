/* Phát khẩn cấp: mode first (two big buttons), then targets, content and options, then a confirm step
   that names how many clusters it reaches (from POST /api/v1/alerts/preview), then send
   (POST /api/v1/alerts) and go to the live view. Every word shown comes from the page (#words),
   so the script holds no text of its own; what people typed is only ever set as textContent.
   The live view (alert.html) follows the alert's status as server-sent events. */
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;

  function api(path, body) {
    return fetch(path, {method: "POST", credentials: "same-origin",
                        headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
                        body: JSON.stringify(body || {})})
      .then(function (r) { return r.json().then(function (j) { return {ok: r.ok, status: r.status, json: j}; }); });
  }

  function show(el, on) { if (el) { el.hidden = !on; } }
  function errorText(res, words) {
    return (res.json && res.json.error && res.json.error.message_vi) || words.dataset.failed;
  }

  // ------------------------------------------------------------------ compose
  var form = document.getElementById("compose");
  if (form) {
    var words = document.getElementById("words");
    var confirmBox = document.getElementById("confirm");
    var mode = null;
    var request = null;

    document.querySelectorAll(".mode").forEach(function (btn) {
      btn.addEventListener("click", function () {
        mode = btn.dataset.mode;
        document.querySelectorAll(".mode").forEach(function (b) { b.setAttribute("aria-pressed", String(b === btn)); });
        form.className = "card compose " + mode;
        var banner = document.getElementById("mode-banner");
        banner.className = "alert-bar " + mode;
        banner.textContent = words.dataset[mode];
        show(form, true);
        show(confirmBox, false);
        form.scrollIntoView({behavior: "smooth", block: "start"});
      });
    });

    function kind() { return form.querySelector('input[name="kind"]:checked').value; }
    function syncKind() {
      form.querySelectorAll("[data-kind]").forEach(function (el) { show(el, el.dataset.kind === kind()); });
      var note = document.getElementById("tts-warning");
      if (note) { show(note, kind() === "template" || kind() === "text"); }
      var t = document.getElementById("template");
      var shown = document.getElementById("template-text");
      if (t && shown && t.selectedOptions.length) { shown.textContent = t.selectedOptions[0].dataset.text; }
    }
    form.addEventListener("change", syncKind);
    syncKind();
    var source = document.getElementById("source");
    if (source) {
      source.addEventListener("change", function () { document.getElementById("url").value = source.value; });
    }

    function build() {
      var areas = Array.prototype.map.call(form.querySelectorAll('input[name="area"]:checked'),
                                           function (c) { return c.value; });
      var receivers = Array.prototype.map.call(form.querySelectorAll('input[name="rx"]:checked'),
                                               function (c) { return c.value; });
      var content = {kind: kind()};
      if (content.kind === "template") { content.template_id = parseInt(form.template_id.value, 10); }
      if (content.kind === "text") { content.text = form.text.value; }
      if (content.kind === "bulletin") { content.bulletin_id = parseInt(form.bulletin_id.value, 10); }
      if (content.kind === "stream") { content.url = form.url.value; }
      var body = {mode: mode, areas: areas, receivers: receivers, content: content, volume: parseInt(form.volume.value, 10),
                  repeat: parseInt(form.repeat.value, 10), gap_s: parseFloat(form.gap_s.value),
                  chime: form.chime.checked};
      if (form.until.value) { body.until_ms = new Date(form.until.value).getTime(); }
      return body;
    }

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var err = document.getElementById("compose-error");
      show(err, false);
      request = build();
      api("/api/v1/alerts/preview", request).then(function (res) {
        if (!res.ok) { err.textContent = errorText(res, words); show(err, true); return; }
        var p = res.json;
        confirmBox.className = "confirm " + mode;
        document.getElementById("confirm-count").textContent =
          words.dataset["count" + (mode === "live" ? "Live" : "Drill")] + " " + p.clusters + " " +
          words.dataset.clusters + " " + words.dataset.at + " " + p.where;
        document.getElementById("confirm-title").textContent = p.title;
        var listen = document.getElementById("listen");
        show(listen, request.content.kind === "text" || request.content.kind === "template");
        show(document.getElementById("listen-audio"), false);
        show(document.getElementById("confirm-needs"), p.needs_confirm);
        show(document.getElementById("confirm-fallback"), p.tts_fallback);
        show(document.getElementById("confirm-running"), p.running.length > 0);
        document.getElementById("running-names").textContent = p.running.map(function (a) { return a.title; }).join(", ");
        var send = document.getElementById("send");
        send.className = "big " + mode;
        send.textContent = words.dataset["send" + (mode === "live" ? "Live" : "Drill")] + " " + p.clusters + " " +
          words.dataset.clusters;
        send.disabled = false;
        show(document.getElementById("confirm-error"), false);
        show(form, false);
        show(confirmBox, true);
        confirmBox.scrollIntoView({behavior: "smooth", block: "start"});
      });
    });

    document.getElementById("listen").addEventListener("click", function () {
      // The message as it will be spoken (the text-to-speech preview: nothing is stored or sent).
      var text = request.content.kind === "text" ? request.content.text :
        document.getElementById("template").selectedOptions[0].dataset.text;
      var btn = this;
      btn.disabled = true;
      fetch("/api/v1/bulletins/tts/preview", {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
        body: JSON.stringify({text: text, area: request.areas[0]})})
        .then(function (r) { return r.ok ? r.blob() : null; })
        .then(function (blob) {
          btn.disabled = false;
          if (!blob) { return; }
          var audio = document.getElementById("listen-audio");
          audio.src = URL.createObjectURL(blob);
          show(audio, true);
          audio.play();
        }, function () { btn.disabled = false; });
    });

    document.getElementById("back").addEventListener("click", function () {
      show(confirmBox, false); show(form, true);
    });

    document.getElementById("send").addEventListener("click", function () {
      var send = this;
      var err = document.getElementById("confirm-error");
      var running = !document.getElementById("confirm-running").hidden;
      var choice = confirmBox.querySelector('input[name="if_running"]:checked');
      if (running && !choice) { err.textContent = words.dataset.choose; show(err, true); return; }
      var body = Object.assign({}, request);
      if (choice) { body.if_running = choice.value; }
      send.disabled = true;
      if (body.content.kind === "live") { startLive(body, send, err); return; }
      api("/api/v1/alerts", body).then(function (res) {
        if (!res.ok) { err.textContent = errorText(res, words); show(err, true); send.disabled = false; return; }
        window.location.href = "/alerts/" + encodeURIComponent(res.json.alert.id);
      }, function () { err.textContent = words.dataset.failed; show(err, true); send.disabled = false; });
    });
  }

  // ------------------------------------------------------------------ live voice
  // The microphone first (nothing is created if it is refused), then the session, then 250 ms slices
  // posted in order; the alert goes out once the first slices reached Icecast.
  function startLive(body, send, err) {
    var words = document.getElementById("words");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.MediaRecorder) {
      err.textContent = words.dataset.nomic; show(err, true); send.disabled = false; return;
    }
    navigator.mediaDevices.getUserMedia({audio: {echoCancellation: true, noiseSuppression: true, autoGainControl: true}})
      .then(function (stream) {
        var types = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"];
        var mime = types.filter(function (t) { return MediaRecorder.isTypeSupported(t); })[0] || "";
        body.mime_type = mime || "audio/webm";
        delete body.content;
        api("/api/v1/live", body).then(function (res) {
          if (!res.ok) {
            stream.getTracks().forEach(function (t) { t.stop(); });
            err.textContent = errorText(res, words); show(err, true); send.disabled = false; return;
          }
          runLive(res.json.alert.id, stream, mime, words);
        });
      }, function () {
        err.textContent = words.dataset.nomic; show(err, true); send.disabled = false;
      });
  }

  function runLive(id, stream, mime, words) {
    show(document.getElementById("confirm"), false);
    var panel = document.getElementById("live-panel");
    panel.className = "confirm " + document.getElementById("compose").className.split(" ").pop();
    show(panel, true);
    var banner = document.getElementById("live-banner");
    var drill = panel.className.indexOf("drill") >= 0;
    banner.className = "alert-bar " + (drill ? "drill" : "live");
    show(document.getElementById("live-drill-say"), drill);  // the receivers play the voice only: say it
    var state = document.getElementById("live-state");
    var errBox = document.getElementById("live-error");
    state.textContent = words.dataset.waiting;
    var recorder = mime ? new MediaRecorder(stream, {mimeType: mime}) : new MediaRecorder(stream);
    var queue = [], seq = 0, sending = false, ended = false, started = Date.now();
    var headers = {"X-CSRFToken": csrf, "Content-Type": mime || "audio/webm"};
    function fail(text) {
      errBox.textContent = text; show(errBox, true);
      finish();
    }
    function pump() {
      if (sending || !queue.length) { return; }
      sending = true;
      var blob = queue.shift();
      fetch("/api/v1/live/" + encodeURIComponent(id) + "/audio?seq=" + seq, {
        method: "POST", credentials: "same-origin", headers: headers, body: blob})
        .then(function (r) { return r.json().then(function (j) { return {ok: r.ok, json: j}; }); })
        .then(function (res) {
          sending = false;
          if (!res.ok) { fail(errorText(res, words)); return; }
          seq += 1;
          if (res.json.live) { state.textContent = words.dataset.onair; }
          pump();
        }, function () { sending = false; fail(words.dataset.failed); });
    }
    recorder.ondataavailable = function (e) { if (e.data && e.data.size && !ended) { queue.push(e.data); pump(); } };
    recorder.start(250);
    var clock = setInterval(function () {
      var s = Math.floor((Date.now() - started) / 1000);
      document.getElementById("live-clock").textContent = Math.floor(s / 60) + ":" + ("0" + (s % 60)).slice(-2);
    }, 500);
    var events = window.EventSource ? new EventSource("/alerts/" + encodeURIComponent(id) + "/events") : null;
    if (events) {
      events.addEventListener("status", function (e) {
        var st = JSON.parse(e.data);
        document.getElementById("live-playing").textContent = (st.counts && st.counts.playing) || 0;
        document.getElementById("live-total").textContent = st.total || 0;
      });
    }
    function finish() {
      if (ended) { return; }
      ended = true;
      clearInterval(clock);
      if (recorder.state !== "inactive") { recorder.stop(); }
      stream.getTracks().forEach(function (t) { t.stop(); });
      if (events) { events.close(); }
      api("/api/v1/live/" + encodeURIComponent(id) + "/stop", {}).then(function () {
        window.location.href = "/alerts/" + encodeURIComponent(id);
      });
    }
    document.getElementById("live-stop").addEventListener("click", finish);
  }

  // ------------------------------------------------------------------ an area's prepared texts
  var editor = document.getElementById("templates-editor");
  if (editor) {
    var tplError = document.getElementById("tpl-error");
    var send = function (method, path, body) {
      return fetch(path, {method: method, credentials: "same-origin",
                          headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
                          body: body ? JSON.stringify(body) : undefined})
        .then(function (r) {
          if (r.ok) { window.location.reload(); return; }
          return r.json().then(function (j) {
            tplError.textContent = (j.error && j.error.message_vi) || ""; show(tplError, true);
          });
        });
    };
    editor.addEventListener("submit", function (e) {
      var f = e.target.closest("form.tpl");
      if (!f) { return; }
      e.preventDefault();
      var id = f.dataset.template;
      var body = {name: f.name.value, text: f.text.value};
      if (id) { send("PATCH", "/api/v1/alert-templates/" + encodeURIComponent(id), body); return; }
      body.area = f.area.value; body.topic = f.topic.value;
      send("POST", "/api/v1/alert-templates", body);
    });
    editor.addEventListener("click", function (e) {
      var del = e.target.closest && e.target.closest(".tpl-delete");
      if (!del) { return; }
      send("DELETE", "/api/v1/alert-templates/" + encodeURIComponent(del.closest("form.tpl").dataset.template));
    });
  }

  // ------------------------------------------------------------------ relay now
  var relay = document.getElementById("relay-form");
  if (relay) {
    var relayWords = relay;
    relay.addEventListener("submit", function (e) {
      e.preventDefault();
      var err = document.getElementById("relay-error");
      show(err, false);
      var body = {areas: Array.prototype.map.call(relay.querySelectorAll('input[name="relay-area"]:checked'),
                                                  function (c) { return c.value; }),
                  level: document.getElementById("relay-level").value,
                  duration_s: 60 * parseInt(document.getElementById("relay-minutes").value || "30", 10)};
      var sourceId = document.getElementById("relay-source").value;
      if (sourceId) { body.source_id = parseInt(sourceId, 10); } else { body.url = document.getElementById("relay-url").value; }
      api("/api/v1/relays", body).then(function (res) {
        if (!res.ok) { err.textContent = errorText(res, relayWords); show(err, true); return; }
        if (res.json.alert) { window.location.href = "/alerts/" + encodeURIComponent(res.json.alert.id); return; }
        window.location.reload();
      });
    });
    relay.addEventListener("click", function (e) {
      var btn = e.target.closest && e.target.closest(".relay-stop");
      if (!btn) { return; }
      api("/api/v1/relays/" + encodeURIComponent(btn.dataset.relay) + "/stop", {}).then(function () {
        window.location.reload();
      });
    });
  }

  // ------------------------------------------------------------------ live view
  var live = document.getElementById("live");
  if (live) {
    var labels = document.getElementById("states").dataset;
    var id = live.dataset.alert;

    var render = function (s) {
      document.getElementById("alert-status").textContent = labels["status_" + s.status] || s.status;
      live.dataset.status = s.status;
      ["playing", "finished", "acknowledged", "waiting", "failed", "refused", "offline", "silent"].forEach(function (k) {
        var el = document.getElementById("n-" + k);
        if (el) { el.textContent = s.counts[k] || 0; }
      });
      document.getElementById("n-total").textContent = s.total;
      var bars = document.getElementById("area-bars");
      bars.textContent = "";
      s.areas.forEach(function (a) {
        var row = document.createElement("div");
        row.className = "area-row";
        var name = document.createElement("span");
        name.textContent = a.name;
        var bar = document.createElement("div");
        bar.className = "bar";
        var total = Object.keys(a.counts).reduce(function (n, k) { return n + a.counts[k]; }, 0) || 1;
        ["finished", "playing", "acknowledged", "waiting", "failed", "refused", "offline", "silent"].forEach(function (k) {
          if (!a.counts[k]) { return; }
          var seg = document.createElement("i");
          seg.className = "st-" + k;
          seg.style.width = (100 * a.counts[k] / total) + "%";
          seg.title = (labels["state_" + k] || k) + ": " + a.counts[k];
          bar.appendChild(seg);
        });
        row.appendChild(name); row.appendChild(bar);
        bars.appendChild(row);
      });
      var list = document.getElementById("cluster-list");
      list.textContent = "";
      s.clusters.forEach(function (c) {
        var li = document.createElement("li");
        li.className = "st-" + c.state;
        li.dataset.rx = c.id;
        li.dataset.state = c.state;
        var b = document.createElement("b");
        b.textContent = c.name;
        var where = document.createElement("span");
        where.className = "muted";
        where.textContent = " " + c.area_name;
        var st = document.createElement("span");
        st.className = "state";
        st.textContent = (labels["state_" + c.state] || c.state) +
          (c.reason ? " · " + (labels["reason_" + c.reason] || c.reason) : "");
        li.appendChild(b); li.appendChild(where); li.appendChild(st);
        list.appendChild(li);
      });
      var open = ["awaiting_confirm", "queued", "preparing", "running"].indexOf(s.status) >= 0;
      show(document.getElementById("stop"), open);
      show(document.getElementById("confirm-alert"), s.status === "awaiting_confirm");
    };

    render(JSON.parse(document.getElementById("initial").textContent));
    if (window.EventSource) {
      var source = new EventSource("/alerts/" + encodeURIComponent(id) + "/events");
      source.addEventListener("status", function (e) { render(JSON.parse(e.data)); });
      source.addEventListener("over", function () { source.close(); });
    }

    var act = function (path, then) {
      var err = document.getElementById("live-error");
      show(err, false);
      api(path, {}).then(function (res) {
        if (!res.ok) { err.textContent = errorText(res, labels); show(err, true); return; }
        then(res.json);
      });
    };
    var stop = document.getElementById("stop");
    if (stop) { stop.addEventListener("click", function () { act("/api/v1/alerts/" + id + "/stop", function (j) { render(j.status); }); }); }
    var confirmBtn = document.getElementById("confirm-alert");
    if (confirmBtn) { confirmBtn.addEventListener("click", function () { act("/api/v1/alerts/" + id + "/confirm", function (j) { render(j.status); }); }); }
    var correct = document.getElementById("correct");
    if (correct) {
      correct.addEventListener("click", function () {
        if (!correct.dataset.armed) { correct.dataset.armed = "1"; correct.textContent = correct.dataset.again; return; }
        act("/api/v1/alerts/" + id + "/correction", function (j) { window.location.href = "/alerts/" + encodeURIComponent(j.alert.id); });
      });
    }
  }
})();
