// Drives the chat page in headless Chromium: streaming, history, system prompt, temperature, stop, model panel.
// Usage: node page-test.mjs <server base URL> <chromium executable>. Prints "PAGE OK" on success, exits 1 otherwise.
import { chromium } from "playwright-core";

const [base, executable] = process.argv.slice(2);
const HELLO = "Hello from a scripted model.";
const APPLE = "Apples are red.";

function check(condition, what) {
  if (!condition) throw new Error("page check failed: " + what);
}

const browser = await chromium.launch({ executablePath: executable, headless: true,
                                        args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage();
  const bodies = [];
  page.on("request", (r) => { if (r.url().endsWith("/v1/chat/completions")) bodies.push(JSON.parse(r.postData())); });
  await page.goto(base + "/", { timeout: 30000 });
  await page.waitForFunction(() => document.getElementById("model-name").textContent.includes("scripted"),
                             null, { timeout: 30000 });
  check((await page.textContent("#device-map")).includes("cpu"), "device map shows the CPU");
  check((await page.textContent("#memory")).length > 20, "memory report shown");

  // Temperature 0 (greedy) and a system prompt, then a streamed reply.
  await page.$eval("#temperature", (e) => { e.value = "0"; e.dispatchEvent(new Event("input")); });
  check((await page.textContent("#temp-value")) === "0", "temperature label follows the slider");
  await page.fill("#system", "Be brief.");
  await page.fill("#input", "hi");
  await page.click("#send");
  await page.waitForSelector(".assistant[data-state=done]", { timeout: 60000 });
  const first = await page.$$eval(".assistant", (els) => els.map((e) => e.textContent));
  check(first.length === 1 && first[0] === HELLO, "first reply is the model's text, got " + JSON.stringify(first));
  check(bodies[0].stream === true && bodies[0].temperature === 0, "request streams with temperature 0");
  check(bodies[0].messages[0].role === "system" && bodies[0].messages[0].content === "Be brief.",
        "system prompt sent first");

  // History: the second request carries the first exchange.
  await page.fill("#input", "apple please");
  await page.press("#input", "Enter");
  await page.waitForFunction(() => document.querySelectorAll(".assistant[data-state=done]").length === 2,
                             null, { timeout: 60000 });
  const second = await page.$$eval(".assistant", (els) => els.map((e) => e.textContent));
  check(second[1] === APPLE, "second reply, got " + JSON.stringify(second));
  const roles = bodies[1].messages.map((m) => m.role + ":" + m.content);
  check(JSON.stringify(roles) === JSON.stringify(["system:Be brief.", "user:hi", "assistant:" + HELLO,
                                                  "user:apple please"]), "history sent: " + JSON.stringify(roles));

  // Streaming and stop: a long reply shows its text while it is still being generated; stop ends it and the
  // server frees its cache. (Whether a short reply arrives in one read or several depends on timing, so the
  // streaming check is on this long one.)
  // Long enough that a quiet machine is still generating when the click lands (1900 tokens took ~0.5 s there).
  await page.fill("#max-tokens", "30000");
  await page.fill("#input", "sing forever");
  await page.click("#send");
  await page.waitForFunction(() => {
    const all = document.querySelectorAll(".assistant");
    const last = all[all.length - 1];
    return last.textContent.startsWith("la la la") && last.dataset.state === "streaming";
  }, null, { timeout: 60000 });
  check(!(await page.isDisabled("#stop")), "stop enabled while streaming");
  await page.click("#stop");
  await page.waitForSelector(".assistant[data-state=stopped]", { timeout: 30000 });
  check(await page.isDisabled("#stop"), "stop disabled after stopping");
  const freed = await page.evaluate(async () => {
    for (let i = 0; i < 200; i++) {
      const text = await (await fetch("/metrics")).text();
      if (/^bigmodel_kv_cache_bytes 0$/m.test(text) && /^bigmodel_active_sessions 0$/m.test(text)) return true;
      await new Promise((r) => setTimeout(r, 50));
    }
    return false;
  });
  check(freed, "the stopped generation's KV cache was freed");

  // A new conversation clears the log and the history.
  await page.click("#clear");
  check((await page.$$(".msg")).length === 0, "log cleared");
  console.log("PAGE OK");
} catch (e) {
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
