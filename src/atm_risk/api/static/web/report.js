/* The attack report form: POST /api/v1/incidents (the immediate alert path), then a
 * printable, police-ready report of the structured facts. Server validation errors (422)
 * are shown next to their field. */
(function () {
  "use strict";

  const R = window.AtmRisk;
  const el = R.el;
  const FIELDS = ["machine", "occurred_at", "method", "outcome", "vehicle", "direction", "notes"];
  // which form field an API error location (its last part) belongs to
  const LOC_TO_FIELD = {
    operator: "machine",
    atm_id: "machine",
    lat: "machine",
    lon: "machine",
    locality: "machine",
    occurred_at: "occurred_at",
    occurred_from: "occurred_at",
    method: "method",
    outcome: "outcome",
    escape: "vehicle",
    notes: "notes",
  };
  const machines = new Map(); // lower-case "operator/atm_id" -> feature
  let me = null;
  let pickMarker = null;

  function $(id) {
    return document.getElementById(id);
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  /** YYYY-MM-DDTHH:MM in the browser's time zone (the value of a datetime-local input). */
  function localInputValue(date) {
    return (
      date.getFullYear() +
      "-" +
      pad(date.getMonth() + 1) +
      "-" +
      pad(date.getDate()) +
      "T" +
      pad(date.getHours()) +
      ":" +
      pad(date.getMinutes())
    );
  }

  function clearErrors() {
    FIELDS.concat(["form"]).forEach(function (name) {
      const node = $(name + "-error");
      if (node) node.textContent = "";
      const input = $(name);
      if (input) input.removeAttribute("aria-invalid");
    });
  }

  function showError(field, message) {
    const node = $(field + "-error") || $("form-error");
    node.textContent = node.textContent ? node.textContent + " " + message : message;
    const input = $(field);
    if (input) {
      input.setAttribute("aria-invalid", "true");
    }
  }

  function showApiErrors(err) {
    if (err.status === 422 && Array.isArray(err.detail)) {
      let first = null;
      err.detail.forEach(function (item) {
        const loc = Array.isArray(item.loc) ? item.loc : [];
        let field = LOC_TO_FIELD[loc[loc.length - 1]];
        let message = item.msg || "invalid";
        const prefixed = /^(\w+):\s*(.*)$/.exec(message);
        if (!field && prefixed && LOC_TO_FIELD[prefixed[1]]) {
          field = LOC_TO_FIELD[prefixed[1]];
          message = prefixed[2];
        }
        showError(field || "form", message);
        first = first || field;
      });
      if (first && $(first)) $(first).focus();
      return;
    }
    if (err.status === 404) {
      showError("machine", "No such machine among those you may report on: check operator/ATM id.");
      $("machine").focus();
      return;
    }
    if (err.status === 401) {
      R.forgetKey();
      showError("form", "The API key was not accepted; reload the page to enter it again.");
      return;
    }
    showError("form", "The report was not sent: " + err.message + ". Try again, or call the police.");
  }

  /** {operator, atm_id, feature} from what was typed (case-insensitive against the list). */
  function parseMachine(text) {
    const value = text.trim();
    if (!value) return { operator: null, atm_id: null, feature: null };
    const known = machines.get(value.toLowerCase());
    if (known) {
      return { operator: known.properties.operator, atm_id: known.properties.atm_id, feature: known };
    }
    const slash = value.indexOf("/");
    if (slash < 0) {
      // an ATM id alone: take it when exactly one of the caller's machines has it
      const hits = Array.from(machines.values()).filter(
        (f) => f.properties.atm_id.toLowerCase() === value.toLowerCase(),
      );
      if (hits.length === 1) return parseMachine(hits[0].properties.id);
      return { operator: null, atm_id: value, feature: null };
    }
    return {
      operator: value.slice(0, slash).trim(),
      atm_id: value.slice(slash + 1).trim(),
      feature: null,
    };
  }

  function describeMachine() {
    const found = parseMachine($("machine").value).feature;
    const info = $("machine-info");
    if (!found) {
      info.textContent = "";
      return;
    }
    const p = found.properties;
    info.textContent = [p.address, p.city].filter(Boolean).join(", ") || "(no address on file)";
    if (window.__pickMap) {
      const [lon, lat] = found.geometry.coordinates;
      if (pickMarker) pickMarker.remove();
      pickMarker = L.circleMarker([lat, lon], {
        radius: 13,
        color: "#0b57d0",
        weight: 3,
        fill: false,
        interactive: false,
      }).addTo(window.__pickMap);
    }
  }

  function pick(feature) {
    $("machine").value = feature.properties.id;
    clearErrors();
    describeMachine();
  }

  /** "YYYY-MM-DD HH:MM ZONE" of an instant in an IANA zone (the browser's if unknown). */
  function localTime(instant, zone) {
    const options = {
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
      timeZoneName: "short",
    };
    let parts;
    try {
      parts = new Intl.DateTimeFormat("en-GB", Object.assign({ timeZone: zone || undefined }, options))
        .formatToParts(instant);
    } catch (_) {
      parts = new Intl.DateTimeFormat("en-GB", options).formatToParts(instant);
    }
    const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + " " + p.timeZoneName;
  }

  async function addressOf(operator, atmId, feature) {
    if (feature) return [feature.properties.address, feature.properties.city];
    try {
      const detail = await R.api(
        "/api/v1/atms/" + encodeURIComponent(operator) + "/" + encodeURIComponent(atmId),
      );
      return [detail.address, detail.city];
    } catch (_) {
      return [null, null];
    }
  }

  function text(id, value) {
    $(id).textContent = value === null || value === undefined || value === "" ? "—" : value;
  }

  function selectedLabel(id) {
    const select = $(id);
    return select.options[select.selectedIndex] ? select.options[select.selectedIndex].text : "";
  }

  async function showReport(result, sent) {
    const incident = result.incident;
    const [address, city] = await addressOf(sent.operator, sent.atm_id, sent.feature);
    text("r-incident-title", incident.id);
    text("r-incident", incident.id);
    text(
      "r-alert",
      result.alert_id
        ? "#" +
            result.alert_id +
            " raised; " +
            (result.deliveries
              ? result.sent + " of " + result.deliveries + " message(s) sent at once"
              : "no receiver is set up for this area: call the police")
        : "no alert raised: call the police",
    );
    text("r-machine", sent.operator + " / " + sent.atm_id);
    text("r-address", [address, city].filter(Boolean).join(", ") || incident.place);
    text(
      "r-coordinates",
      incident.lat === null ? null : incident.lat.toFixed(5) + ", " + incident.lon.toFixed(5),
    );
    const instant = new Date(incident.occurred_from);
    const zone =
      (sent.feature && sent.feature.properties.timezone) ||
      Intl.DateTimeFormat().resolvedOptions().timeZone;
    text(
      "r-time",
      localTime(instant, zone) +
        " (local time, " +
        zone +
        "; " +
        instant.toISOString().slice(0, 16).replace("T", " ") +
        " UTC)",
    );
    text("r-method", sent.methodLabel);
    text("r-outcome", sent.outcomeLabel);
    text("r-vehicle", sent.vehicle);
    text("r-direction", sent.direction);
    text("r-notes", sent.notes);
    const principal =
      me.role + (me.tenant ? " " + me.tenant : "") + ", API key " + (me.key_prefix || "?");
    text("r-reporter", (sent.reporter ? sent.reporter + " — " : "") + principal);
    text(
      "r-reported-at",
      localTime(new Date(), null),
    );
    document.title = "Attack report " + incident.id + " · atm-risk";
    $("report-entry").hidden = true;
    $("printable").hidden = false;
    window.scrollTo(0, 0);
    R.setStatus("Report " + incident.id + " sent; the alert went out at once.", "ok");
    window.__lastReport = result;
  }

  async function submit(event) {
    event.preventDefault();
    clearErrors();
    const machine = parseMachine($("machine").value);
    const vehicle = $("vehicle").value.trim();
    const direction = $("direction").value.trim();
    const notes = $("notes").value.trim();
    const reporter = $("reporter").value.trim();
    const body = { method: $("method").value, outcome: $("outcome").value };
    if (machine.operator) body.operator = machine.operator;
    if (machine.atm_id) body.atm_id = machine.atm_id;
    const when = $("occurred_at").value;
    if (when) {
      const date = new Date(when);
      if (Number.isNaN(date.getTime())) {
        showError("occurred_at", "not a valid date and time");
        return;
      }
      body.occurred_at = date.toISOString();
    }
    const escape = [vehicle && "Vehicle: " + vehicle, direction && "Direction: " + direction];
    if (vehicle || direction) body.escape = escape.filter(Boolean).join("; ");
    const allNotes = [notes, reporter && "Reported by: " + reporter].filter(Boolean).join("\n");
    if (allNotes) body.notes = allNotes;
    const button = $("send");
    button.disabled = true;
    button.textContent = "Sending…";
    let result;
    try {
      result = await R.api("/api/v1/incidents", { method: "POST", json: body });
    } catch (err) {
      showApiErrors(err);
      return;
    } finally {
      button.disabled = false;
      button.textContent = "Send report and alert";
    }
    try {
      await showReport(result, {
        operator: machine.operator,
        atm_id: machine.atm_id,
        feature: machine.feature,
        methodLabel: selectedLabel("method"),
        outcomeLabel: selectedLabel("outcome"),
        vehicle: vehicle,
        direction: direction,
        notes: notes,
        reporter: reporter,
      });
    } catch (err) {
      // sent and alerted: never invite a second report of the same attack
      showError(
        "form",
        "The report was sent as " + result.incident.id + " and the alert went out, but it " +
          "cannot be shown here (" + err.message + ").",
      );
    }
  }

  function newReport() {
    $("report-form").reset();
    $("occurred_at").value = localInputValue(new Date());
    $("machine-info").textContent = "";
    clearErrors();
    $("printable").hidden = true;
    $("report-entry").hidden = false;
    document.title = "Report an attack · atm-risk";
    $("machine").focus();
  }

  async function main() {
    window.__reportReady = false;
    $("occurred_at").value = localInputValue(new Date());
    $("set-now").addEventListener("click", function () {
      $("occurred_at").value = localInputValue(new Date());
    });
    $("report-form").addEventListener("submit", submit);
    $("machine").addEventListener("change", describeMachine);
    $("print").addEventListener("click", () => window.print());
    $("new-report").addEventListener("click", newReport);
    const wanted = R.fragment().get("machine");
    R.apiKey(); // reads #key=... before anything else touches the fragment
    if (wanted) $("machine").value = wanted;
    try {
      me = await R.principal();
    } catch (err) {
      R.setStatus(
        err.status === 401
          ? "The API key was not accepted. Open /report#key=YOUR_KEY or reload to enter it."
          : "Could not reach the server: " + err.message,
        "error",
      );
      return;
    }
    R.setStatus("Loading your machines…");
    const map = R.newMap("pick-map");
    window.__pickMap = map;
    const [boundaries, doc] = await Promise.all([
      R.api("/api/v1/map/boundaries.geojson"),
      R.api("/api/v1/map/machines.geojson"),
    ]);
    R.drawBoundaries(map, boundaries);
    const list = $("machine-list");
    doc.features.forEach(function (f) {
      machines.set(f.properties.id.toLowerCase(), f);
      const where = [f.properties.address, f.properties.city].filter(Boolean).join(", ");
      list.append(el("option", { value: f.properties.id }, where));
    });
    R.drawMachines(map, doc, pick);
    const points = doc.features.map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]);
    if (points.length) map.fitBounds(L.latLngBounds(points).pad(0.2), { maxZoom: 13, animate: false });
    if ($("machine").value) {
      const found = parseMachine($("machine").value).feature;
      if (found) $("machine").value = found.properties.id;
      describeMachine();
    }
    R.setStatus(
      doc.features.length + " machine(s) you may report on. Pick one on the map or type its id.",
    );
    window.__reportReady = true;
    document.body.dataset.reportReady = "true";
  }

  main().catch(function (err) {
    R.setStatus("Could not load the form: " + err.message, "error");
  });
})();
