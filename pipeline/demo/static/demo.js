// The demo page: asks the demo's JSON API (pipeline/demo/app.py) and draws what it answers.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let digit = null;

async function api(path, options) {
  const response = await fetch(path, options);
  let body;
  try {
    body = await response.json();
  } catch (e) {
    throw new Error(`the demo answered ${response.status} without a message`);
  }
  if (!response.ok) throw new Error(body.error || `the demo answered ${response.status}`);
  return body;
}

function say(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

async function attempt(work) {
  try {
    say("");
    await work();
  } catch (e) {
    say(e.message);
  }
}

function image(png, alt) {
  const img = document.createElement("img");
  img.src = `data:image/png;base64,${png}`;
  img.alt = alt;
  img.className = "digit-image";
  return img;
}

function showRun() {
  const run = info.run;
  const line = $("run");
  line.textContent = "";
  if (run.id && run.name) {
    line.append(`${info.source}: run “${run.name}” (${run.id}) of experiment “${run.experiment}” · `);
    const link = document.createElement("a");
    link.href = run.url;
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = "open the run in the MLflow UI";
    link.id = "run-link";
    line.append(link);
  } else {
    line.textContent = `${info.source}` + (run.id ? ` (run ${run.id}, ${run.note})` : "");
  }
  const figures = $("figures");
  for (const [label, value] of Object.entries(run.figures || {})) {
    const item = document.createElement("li");
    item.textContent = `${label}: ${label === "FLD" ? value.toFixed(1) : value.toFixed(3)}`;
    figures.append(item);
  }
}

function buildDigits() {
  for (let d = 0; d <= 9; d++) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "digit";
    button.id = `digit-${d}`;
    button.textContent = d;
    button.disabled = !info.digits.includes(d);
    button.addEventListener("click", () => { digit = d; showStyles(); });
    $("digits").append(button);
  }
}

function buildSliders() {
  for (let k = 0; k < info.continuous_codes; k++) {
    const label = document.createElement("label");
    const slider = document.createElement("input");
    slider.type = "range";
    slider.min = -info.code_range;
    slider.max = info.code_range;
    slider.step = 0.1;
    slider.value = 0;
    slider.id = `code-${k + 1}`;
    const value = document.createElement("span");
    value.textContent = "0.0";
    slider.addEventListener("input", () => {
      value.textContent = Number(slider.value).toFixed(1);
      if (digit !== null) showStyles();
    });
    label.append(`c${k + 1} (continuous code)`, slider, value);
    $("sliders").append(label);
  }
}

let pending = null;  // the newest styles request; an older answer arriving late is dropped
async function showStyles() {
  document.querySelectorAll("button.digit").forEach((b) => b.classList.toggle("chosen", Number(b.textContent) === digit));
  const codes = [...document.querySelectorAll("#sliders input")].map((s) => s.value).join(",");
  const query = new URLSearchParams({ digit, n: $("count").value, seed: $("seed").value, codes });
  const mine = (pending = query.toString());
  await attempt(async () => {
    const answer = await api(`/api/styles?${query}`);
    if (mine !== pending) return;
    const grid = $("styles");
    grid.replaceChildren(...answer.images.map((png, i) => image(png, `digit ${digit}, style ${i + 1}`)));
    grid.dataset.digit = digit;
  });
}

async function labDemo() {
  const button = $("lab-run");
  button.disabled = true;
  await attempt(async () => {
    const seed = Math.floor(Math.random() * 1e6);
    const answer = await api(`/api/lab-demo?seed=${seed}`);
    const table = document.createElement("table");
    answer.images.forEach((row, d) => {
      const tr = table.insertRow();
      const head = document.createElement("th");
      head.textContent = d;
      tr.append(head);
      row.forEach((png, s) => {
        const img = image(png, `digit ${d}, style ${s + 1}: read as ${answer.predicted[d][s]}`);
        img.title = `read as ${answer.predicted[d][s]}`;
        if (answer.predicted[d][s] !== d) img.classList.add("wrong");
        tr.insertCell().append(img);
      });
    });
    const grades = table.insertRow();
    grades.append(document.createElement("th"));
    answer.right.forEach((right, s) => {
      const cell = grades.insertCell();
      cell.className = `grade ${answer.passes[s] ? "pass" : "fail"}`;
      cell.textContent = `${right}/10`;
      cell.title = answer.passes[s] ? "passes" : "fails";
    });
    $("lab").replaceChildren(table);
    $("pass-mark").textContent = answer.pass_mark;
    $("lab-grade").textContent = `demo grade ${answer.grade}/10 (noise seed ${seed})`;
  });
  button.disabled = !info.lab_demo;
}

function setUpPad() {
  const pad = $("pad");
  const pen = pad.getContext("2d");
  const clear = () => {
    pen.fillStyle = "#000";
    pen.fillRect(0, 0, pad.width, pad.height);
    $("reading").textContent = "";
    $("seen").removeAttribute("src");
  };
  clear();
  pen.strokeStyle = "#fff";
  pen.lineWidth = 20;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  let drawing = false;
  const at = (event) => {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
  };
  pad.addEventListener("pointerdown", (event) => {
    drawing = true;
    pen.beginPath();
    pen.moveTo(...at(event));
    pen.lineTo(...at(event));
    pen.stroke();
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    pen.lineTo(...at(event));
    pen.stroke();
  });
  const stop = () => {
    if (!drawing) return;
    drawing = false;
    read();
  };
  pad.addEventListener("pointerup", stop);
  pad.addEventListener("pointerleave", stop);
  $("clear").addEventListener("click", clear);
  $("read").addEventListener("click", read);
}

async function read() {
  await attempt(async () => {
    const answer = await api("/api/read", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ png: $("pad").toDataURL("image/png") }),
    });
    $("reading").textContent = `digit ${answer.digit} (confidence ${(100 * answer.probability).toFixed(1)}%, code ${answer.code})`;
    $("seen").src = `data:image/png;base64,${answer.seen}`;
  });
}

async function start() {
  await attempt(async () => {
    info = await api("/api/info");
    $("count").max = info.max_styles;
    showRun();
    buildDigits();
    buildSliders();
    $("new-styles").addEventListener("click", () => {
      $("seed").value = Number($("seed").value) + 1;
      if (digit === null) digit = info.digits[0];
      showStyles();
    });
    $("count").addEventListener("change", () => digit !== null && showStyles());
    $("seed").addEventListener("change", () => digit !== null && showStyles());
    $("lab-run").addEventListener("click", labDemo);
    $("lab-run").disabled = !info.lab_demo;
    if (!info.lab_demo) $("lab").textContent = info.notes.lab_demo;
    if (info.reader) {
      setUpPad();
    } else {
      $("draw-section").querySelector(".draw").replaceChildren(info.notes.reader || "Q is not exported as a model for this run.");
    }
    document.body.dataset.ready = "true";
  });
}

start();
