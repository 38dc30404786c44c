// The browser scenarios: headless Chromium (playwright-core) on Open WebUI 0.12.4 with sluice.
//
// Started by tests/browser/browser.py, which passes the addresses and keys in
// SLUICE_BROWSER_CONFIG (JSON). Prints one `PASS name` / `FAIL name: reason` line per scenario,
// `  note: ...` lines for what an operator should know, and a final `N passed, M failed` line.
// Selectors follow Open WebUI's own Svelte sources (aria-labels, ids, visible texts).

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const cfg = JSON.parse(
	process.env.SLUICE_BROWSER_CONFIG ?? fs.readFileSync(new URL('./.serve.json', import.meta.url), 'utf8')
);
const ADMIN = { name: 'Admin Person', email: 'admin@example.com', password: 'browser-Pass-1234' };
const SCENARIO_SECONDS = 240;
const MARKER = '[sluice:';
const REASONING_END = '17 × 23 = 391.'; // "17 × 23 = **391**." as rendered (391 in bold)

fs.mkdirSync(cfg.artifacts, { recursive: true });
for (const old of fs.readdirSync(cfg.artifacts)) {
	if (/--.*\.png$/.test(old)) fs.rmSync(path.join(cfg.artifacts, old)); // screenshots of an earlier run
}

// ---------------------------------------------------------------- harness

const results = [];
const passed = new Set();
let current = { name: '', step: '' };
let page; // the page of the scenario running, for the failure screenshot

function note(text) {
	console.log(`  note: ${text}`);
}

async function step(label, fn) {
	current.step = label;
	return await fn();
}

function check(condition, message) {
	if (!condition) throw new Error(message);
}

function withTimeout(promise, seconds, what) {
	let timer;
	return Promise.race([
		promise.finally(() => clearTimeout(timer)),
		new Promise((_, reject) => {
			timer = setTimeout(() => reject(new Error(`${what} did not finish in ${seconds} s`)), seconds * 1000);
		})
	]);
}

const SCENARIOS = [];

/** Declares a scenario; `needs`: the scenarios whose outcome it builds on (run first). */
function scenario(name, needs, fn) {
	SCENARIOS.push({ name, needs, fn });
}

async function run({ name, needs, fn }) {
	const missing = needs.filter((n) => !passed.has(n));
	if (missing.length) {
		results.push(false);
		console.log(`FAIL ${name}: not run, it needs ${missing.join(', ')}`);
		return;
	}
	current = { name, step: 'start' };
	const started = Date.now();
	try {
		await withTimeout(fn(), SCENARIO_SECONDS, name);
		results.push(true);
		passed.add(name);
		console.log(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
	} catch (e) {
		results.push(false);
		let shot = '';
		try {
			const file = path.join(cfg.artifacts, `${name}--${current.step.replace(/[^A-Za-z0-9_.-]+/g, '_')}.png`);
			await page.screenshot({ path: file, fullPage: false, timeout: 10000 });
			shot = ` (screenshot: ${file})`;
		} catch {
			/* no page to show */
		}
		const reason = String(e?.message ?? e).split('\n').slice(0, 6).join(' | ');
		console.log(`FAIL ${name}: [${current.step}] ${reason}${shot}`);
	}
}

// ---------------------------------------------------------------- Open WebUI helpers

/** Every toast text shown since the page loaded, collected as they appear (they fade out). */
const TOAST_RECORDER = () => {
	window.__toasts = [];
	const seen = new WeakSet();
	new MutationObserver(() => {
		for (const el of document.querySelectorAll('[data-sonner-toast]')) {
			if (seen.has(el)) continue;
			const text = (el.innerText || '').trim();
			if (!text) continue;
			seen.add(el);
			window.__toasts.push(text);
		}
	}).observe(document, { childList: true, subtree: true, characterData: true });
};

async function toasts(p = page) {
	return await p.evaluate(() => window.__toasts ?? []);
}

/** Waits until a toast matching `re` was shown after the `since`-th toast; returns its text. */
async function waitToast(re, since, seconds = 15) {
	const deadline = Date.now() + seconds * 1000;
	while (Date.now() < deadline) {
		const all = await toasts();
		const hit = all.slice(since).find((t) => re.test(t));
		if (hit) return hit;
		await page.waitForTimeout(200);
	}
	throw new Error(`no toast matching ${re} in ${seconds} s; toasts shown: ${JSON.stringify((await toasts()).slice(since))}`);
}

/** Closes what Open WebUI shows on a first visit (the changelog, "what's new"). */
async function dismissModals() {
	for (let i = 0; i < 5; i++) {
		const ok = page.getByRole('button', { name: "Okay, Let's Go!" });
		if (await ok.isVisible().catch(() => false)) {
			note(`dismissed a modal on ${new URL(page.url()).pathname}: ${normalize(await page.getByRole('dialog').first().innerText().catch(() => '')).slice(0, 80)}`);
			await ok.click();
			await page.waitForTimeout(300);
			continue;
		}
		break;
	}
}

async function openAdminSettings(tab) {
	await page.goto(`/admin/settings/${tab}`);
	await page.waitForURL(/settings=admin/, { timeout: 30000 });
	await dismissModals();
}

/** A valve's text field on Admin > Settings > Pipelines (its placeholder is the valve's title). */
async function valveInput(title) {
	return page.locator('form').filter({ has: page.locator('select#pipeline') }).locator(`input[placeholder="${title}"]`);
}

/** The invalid fields of the form holding `locator`, as `placeholder: message`. */
async function invalidFields(locator) {
	return await locator.evaluate((el) => {
		const form = el.closest('form');
		return [...form.querySelectorAll(':invalid')]
			.filter((f) => f.tagName !== 'FORM' && f.tagName !== 'FIELDSET')
			.map((f) => `${f.placeholder || f.name || f.id || f.tagName}: ${f.validationMessage}`);
	});
}

/** Why Save sent nothing: the form's invalid fields. Open WebUI 0.12.4's Admin > Settings >
 * Pipelines renders every valve that is not null, an enum or a boolean as a required text input
 * (it ignores the spec's `input`), so a valve whose value is "" or [] blocks every save. */
async function blocked(locator) {
	const invalid = await invalidFields(locator);
	return new Error(
		`Save sent nothing: the browser blocks the form on ${JSON.stringify(invalid)} ` +
			`(an empty valve value from sluice is shown as a required text input)`
	);
}

/** Clicks Save on the Pipelines page; returns the valves update request's response, or null. */
async function savePipelines(pipelineId, seconds = 8) {
	const save = page.getByRole('button', { name: 'Save', exact: true });
	const request = page
		.waitForResponse((r) => r.url().includes(`/api/v1/pipelines/${pipelineId}/valves/update`), {
			timeout: seconds * 1000
		})
		.catch(() => null);
	await save.click();
	const response = await request;
	if (!response) return null;
	let body = null;
	try {
		body = await response.json();
	} catch {
		body = await response.text().catch(() => null);
	}
	return { status: response.status(), body };
}

/** Selects a pipeline on Admin > Settings > Pipelines (shown as "<id> (<type>)") and waits
 * for its valves' fields. */
async function selectPipeline(id) {
	const select = page.locator('select#pipeline');
	await select.waitFor({ timeout: 30000 });
	const options = (await select.locator('option').allInnerTexts()).map((o) => o.trim());
	const option = options.find((o) => o.split(' ')[0] === id);
	check(option, `no pipeline ${id} in ${JSON.stringify(options)}`);
	const before = await select.evaluate((el) => el.options[el.selectedIndex]?.text.trim());
	if (before !== option) await select.selectOption({ label: option });
	// Each of sluice's pipelines has a URL valve; its field shows once the valves are loaded.
	const url = id === 'openpipe_reporting' ? 'OpenPipe Base URL' : 'Base URL';
	await (await valveInput(url)).waitFor({ timeout: 20000 });
	return option;
}

/** Picks a model in the chat's model picker, as a user does. */
async function pickModel(id) {
	const trigger = page.locator('button[id^="model-selector-"][aria-haspopup="listbox"]').first();
	await trigger.click();
	const list = page.getByRole('listbox', { name: 'Available models' });
	await list.waitFor();
	await page.getByRole('combobox', { name: 'Search In Models' }).fill(id.split('.').pop());
	await list.locator(`[data-value="${id}"]`).click();
	await list.waitFor({ state: 'hidden' });
}

async function send(text) {
	const input = page.locator('#chat-input');
	await input.click();
	await input.fill(text);
	await page.locator('#send-message-button').click();
}

/** Waits for the `n`-th answer (1-based) to be complete (its toolbar shows Copy); returns its
 * `.chat-assistant` block (the model's name and toolbar are outside it). */
async function waitAnswer(n, seconds = 60) {
	const deadline = Date.now() + seconds * 1000;
	while (Date.now() < deadline) {
		const block = messageBlock(n);
		if (await block.getByRole('button', { name: 'Copy', exact: true }).isVisible().catch(() => false)) {
			return block.locator('.chat-assistant');
		}
		await page.waitForTimeout(250);
	}
	throw new Error(`answer ${n} not complete in ${seconds} s; page: ${(await bodyText()).slice(-600)}`);
}

/** The `n`-th assistant message (1-based), toolbar included. */
function messageBlock(n) {
	return page
		.locator('[id^="message-"]')
		.filter({ has: page.locator('.chat-assistant') })
		.nth(n - 1);
}

async function bodyText() {
	return await page.locator('body').innerText().catch(() => '');
}

function normalize(text) {
	return text.replace(/\s+/g, ' ').trim();
}

// ---------------------------------------------------------------- scenarios

const browser = await chromium.launch({
	executablePath: '/usr/bin/chromium',
	headless: true,
	args: [
		'--no-sandbox',
		'--disable-gpu',
		'--disable-quic',
		'--no-first-run',
		'--disable-background-networking',
		'--disable-component-update',
		'--disable-sync'
	]
});
const context = await browser.newContext({
	baseURL: cfg.owuiUrl,
	viewport: { width: 1440, height: 1000 },
	acceptDownloads: true,
	locale: 'en-US'
});
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: cfg.owuiUrl });
await context.addInitScript(TOAST_RECORDER);
context.setDefaultTimeout(20000);
context.setDefaultNavigationTimeout(60000);
page = await context.newPage();
const consoleErrors = [];
page.on('pageerror', (e) => consoleErrors.push(String(e?.message ?? e)));

scenario('admin_signs_up_and_registers_sluice', [], async () => {
	await step('open the start page', async () => {
		await page.goto('/');
		await page.waitForURL(/\/auth/, { timeout: 60000 });
	});
	await step('onboarding: get started', async () => {
		const start = page.getByRole('button', { name: 'Get started' });
		await start.first().click({ timeout: 30000 });
	});
	await step('sign up the first account', async () => {
		await page.locator('#name').fill(ADMIN.name);
		await page.locator('#email').fill(ADMIN.email);
		await page.locator('#password').fill(ADMIN.password);
		if (await page.locator('#confirm-password').isVisible().catch(() => false)) {
			await page.locator('#confirm-password').fill(ADMIN.password);
		}
		await page.getByRole('button', { name: 'Create Admin Account' }).click();
		await page.waitForURL((url) => !url.pathname.startsWith('/auth'), { timeout: 60000 });
		await page.locator('#chat-input').waitFor({ timeout: 60000 });
		await dismissModals();
	});
	await step('add the connection', async () => {
		await openAdminSettings('connections');
		await page.getByText('Manage OpenAI API Connections').waitFor({ timeout: 30000 });
		await page.getByRole('button', { name: 'Add Connection' }).first().click();
		const modal = page.locator('form').filter({ has: page.locator('#url-input') });
		await modal.locator('#url-input').fill(cfg.sluiceUrl);
		await modal.getByPlaceholder('API Key').fill(cfg.sluiceKey);
		const since = (await toasts()).length;
		await modal.getByRole('button', { name: 'Verify Connection' }).click();
		const verified = await waitToast(/verified|error|fail|not/i, since);
		check(verified === 'Server connection verified', `Verify Connection shows ${JSON.stringify(verified)}`);
		const saved = (await toasts()).length;
		await modal.getByRole('button', { name: 'Save', exact: true }).click();
		await waitToast(/OpenAI API settings updated/, saved);
	});
	await step('the connection shows the Pipelines badge', async () => {
		// The badge is computed when the page opens (from the connection's model list).
		await openAdminSettings('connections');
		await page.getByText('Manage OpenAI API Connections').waitFor({ timeout: 30000 });
		const badge = await page.waitForFunction(
			(url) => {
				const input = [...document.querySelectorAll('input[readonly]')].find((i) => i.value === url);
				return input?.parentElement?.querySelector('svg') ?? null;
			},
			cfg.sluiceUrl,
			{ timeout: 20000 }
		);
		await badge.asElement().hover();
		await page.locator('[data-tippy-root]').filter({ hasText: /^Pipelines$/ }).waitFor({ timeout: 10000 });
		const urls = await page.evaluate(() =>
			[...document.querySelectorAll('input[readonly]')].map((i) => i.value).filter((v) => v.startsWith('http'))
		);
		note(`connections listed: ${JSON.stringify(urls)}`);
	});
	await step('the model picker offers the manifold models', async () => {
		await page.goto('/');
		await dismissModals();
		await page.locator('button[id^="model-selector-"][aria-haspopup="listbox"]').first().click();
		const list = page.getByRole('listbox', { name: 'Available models' });
		await list.waitFor();
		await list.locator('[data-value="openai_responses.o4-mini"]').waitFor({ timeout: 20000 });
		const values = await list.locator('[role="option"][data-value]').evaluateAll((els) => els.map((e) => e.dataset.value));
		note(`model picker: ${JSON.stringify(values)}`);
		check(values.includes('openai_responses.gpt-4.1'), `openai_responses.gpt-4.1 missing: ${values}`);
		check(!values.some((v) => v.startsWith('openpipe_reporting')), `the filter is offered as a model: ${values}`);
		await page.keyboard.press('Escape');
	});
});

scenario('pipelines_save_with_an_empty_secret', ['admin_signs_up_and_registers_sluice'], async () => {
	await step('open openpipe_reporting', async () => {
		await openAdminSettings('pipelines');
		await selectPipeline('openpipe_reporting');
	});
	const timeout = await valveInput('Timeout Seconds');
	await step('the empty OpenPipe key field', async () => {
		const key = await valveInput('OpenPipe API Key');
		const shown = await key.count();
		if (shown) {
			const info = await key.evaluate((el) => ({ type: el.type, required: el.required, value: el.value }));
			note(`empty OpenPipe API Key field: ${JSON.stringify(info)}`);
		} else {
			note('empty OpenPipe API Key: no input shown (None)');
		}
	});
	await step('change TIMEOUT_SECONDS and save without a key', async () => {
		await timeout.fill('12');
		const since = (await toasts()).length;
		const response = await savePipelines('openpipe_reporting');
		if (!response) throw await blocked(timeout);
		check(response.status === 200, `valves update -> ${response.status} ${JSON.stringify(response.body)}`);
		await waitToast(/Valves updated successfully/, since);
	});
	await step('the change is kept', async () => {
		await openAdminSettings('pipelines');
		await selectPipeline('openpipe_reporting');
		check((await timeout.inputValue()) === '12', `TIMEOUT_SECONDS shows ${await timeout.inputValue()}`);
	});
});

scenario('pipelines_secret_is_masked', ['admin_signs_up_and_registers_sluice'], async () => {
	await step('open openpipe_reporting', async () => {
		await openAdminSettings('pipelines');
		await selectPipeline('openpipe_reporting');
	});
	const key = await valveInput('OpenPipe API Key');
	await step('type the key', async () => {
		if (!(await key.count())) {
			// A valve shown as None (null value) has no field until its None/Custom toggle is clicked.
			const forId = await page.locator('label').filter({ hasText: /^\s*OpenPipe API Key\s*$/ }).getAttribute('for');
			await page.locator(`[id="${forId}"]`).click();
		}
		await key.fill(cfg.openpipeKey);
		const typing = await key.evaluate((el) => ({
			type: el.type,
			textSecurity: getComputedStyle(el).webkitTextSecurity ?? null
		}));
		note(`OpenPipe API Key while typing: input type=${typing.type}, -webkit-text-security=${typing.textSecurity}`);
		const since = (await toasts()).length;
		const response = await savePipelines('openpipe_reporting');
		if (!response) throw await blocked(key);
		check(response.status === 200, `valves update -> ${response.status} ${JSON.stringify(response.body)}`);
		await waitToast(/Valves updated successfully/, since);
	});
	await step('after a reload the key is masked', async () => {
		await openAdminSettings('pipelines');
		await selectPipeline('openpipe_reporting');
		const shown = await key.inputValue();
		const last4 = cfg.openpipeKey.slice(-4);
		check(shown === `********${last4}`, `the key field shows ${JSON.stringify(shown)}, expected ********${last4}`);
		const html = await page.content();
		check(!html.includes(cfg.openpipeKey), 'the key is in the page in clear');
	});
});

scenario('pipelines_invalid_value_is_refused', ['pipelines_secret_is_masked'], async () => {
	let before;
	const timeout = await valveInput('Timeout Seconds');
	await step('open openpipe_reporting', async () => {
		await openAdminSettings('pipelines');
		await selectPipeline('openpipe_reporting');
		before = await timeout.inputValue();
	});
	await step('save TIMEOUT_SECONDS = 0', async () => {
		await timeout.fill('0');
		const since = (await toasts()).length;
		const response = await savePipelines('openpipe_reporting');
		if (!response) throw await blocked(timeout);
		check(response.status !== 200, `TIMEOUT_SECONDS = 0 accepted: ${response.status}`);
		await page.waitForTimeout(1500);
		const shown = (await toasts()).slice(since);
		note(`rejected save (TIMEOUT_SECONDS = 0): Open WebUI answered ${response.status} ${JSON.stringify(response.body)}; toasts: ${JSON.stringify(shown)}`);
		check(shown.length > 0, 'no message shown for a rejected save');
		check(!shown.some((t) => /Valves updated successfully/.test(t)), `a success toast after a rejection: ${shown}`);
	});
	await step('Save again after the rejection', async () => {
		await timeout.fill('11');
		const since = (await toasts()).length;
		const errors = consoleErrors.length;
		const response = await savePipelines('openpipe_reporting', 5);
		await page.waitForTimeout(500);
		note(
			`Save clicked again after a rejection (no reload): ${response ? `request sent -> ${response.status}` : 'no request sent'}; ` +
				`toasts ${JSON.stringify((await toasts()).slice(since))}; page errors ${JSON.stringify(consoleErrors.slice(errors))}`
		);
	});
	await step('the refused value is not stored', async () => {
		await openAdminSettings('pipelines');
		await selectPipeline('openpipe_reporting');
		const after = await timeout.inputValue();
		check(after !== '0', 'TIMEOUT_SECONDS shows 0 after the refusal');
		note(`after the reload TIMEOUT_SECONDS shows ${after} (it was ${before} before the refused save)`);
	});
});

scenario('pipelines_manifold_valves', ['admin_signs_up_and_registers_sluice'], async () => {
	await step('open openai_responses', async () => {
		await openAdminSettings('pipelines');
		await selectPipeline('openai_responses');
	});
	const retries = await valveInput('Max Retries');
	const key = await valveInput('API Key');
	await step('the API key field', async () => {
		await key.waitFor({ timeout: 10000 }).catch(() => null);
		check(await key.count(), `no API key field; placeholders: ${JSON.stringify(
			await page.locator('form input[placeholder]').evaluateAll((els) => els.map((e) => e.placeholder))
		)}`);
		const info = await key.evaluate((el) => ({
			type: el.type,
			value: el.value,
			textSecurity: getComputedStyle(el).webkitTextSecurity ?? null
		}));
		note(`openai_responses API key field: input type=${info.type}, shows ${JSON.stringify(info.value)}`);
		check(info.value === `********${cfg.openaiKey.slice(-4)}`, `API key field shows ${JSON.stringify(info.value)}`);
		check(!(await page.content()).includes(cfg.openaiKey), 'the OpenAI key is in the page in clear');
	});
	await step('change MAX_RETRIES and save', async () => {
		await retries.fill('2');
		const since = (await toasts()).length;
		const response = await savePipelines('openai_responses');
		if (!response) throw await blocked(retries);
		check(response.status === 200, `valves update -> ${response.status} ${JSON.stringify(response.body)}`);
		await waitToast(/Valves updated successfully/, since);
	});
	await step('the change is kept and the key still works', async () => {
		await openAdminSettings('pipelines');
		await selectPipeline('openai_responses');
		check((await retries.inputValue()) === '2', `MAX_RETRIES shows ${await retries.inputValue()}`);
		const r = await fetch(`${cfg.sluiceUrl}/openai_responses/valves`, {
			headers: { Authorization: `Bearer ${cfg.sluiceKey}` }
		});
		const valves = await r.json();
		check(valves.API_KEY === `********${cfg.openaiKey.slice(-4)}`, `sluice's API_KEY now ${valves.API_KEY}`);
		check(valves.MAX_RETRIES === 2, `sluice's MAX_RETRIES now ${valves.MAX_RETRIES}`);
	});
});

const state = {};

scenario('reasoning_chat_then_regenerate', ['admin_signs_up_and_registers_sluice'], async () => {
	await step('pick openai_responses.o4-mini', async () => {
		await page.goto('/');
		await dismissModals();
		await pickModel('openai_responses.o4-mini');
	});
	const answer = await step('ask e2e:reasoning 17 x 23', async () => {
		await send('e2e:reasoning 17 x 23');
		return await waitAnswer(1);
	});
	await step('the answer and its reasoning block', async () => {
		const text = normalize(await answer.innerText());
		check(text.endsWith(REASONING_END), `the answer reads ${JSON.stringify(text)}`);
		const bold = await answer.locator('.markdown-prose strong').allInnerTexts();
		check(bold.includes('391'), `391 is not in bold: strong = ${JSON.stringify(bold)}`);
		check(!text.includes(MARKER), `the answer shows a replay marker: ${text}`);
		const thoughts = text.match(/Thought for/g) ?? [];
		note(`reasoning answer as shown: ${JSON.stringify(text)}`);
		check(thoughts.length === 1, `${thoughts.length} "Thought for" lines: ${JSON.stringify(text)}`);
		const block = answer.getByRole('button', { name: /^Thought for/ });
		check((await block.count()) === 1, 'no collapsible reasoning block');
		await block.click();
		const opened = normalize(await answer.innerText());
		check(/Checking the arithmetic/.test(opened), `the open reasoning block shows ${JSON.stringify(opened)}`);
		await block.click();
	});
	await step('a second turn', async () => {
		await send('e2e:plain and in French?');
		const second = await waitAnswer(2);
		const text = normalize(await second.locator('.markdown-prose').innerText());
		check(text === 'Bonjour! Ça va ? Comment puis-je vous aider ?', `the second answer reads ${JSON.stringify(text)}`);
		const shown = normalize(await second.innerText());
		note(`second answer as shown: ${JSON.stringify(shown)}`);
		check((shown.match(/Thought for/g) ?? []).length <= 1, `more than one "Thought for" line: ${shown}`);
		state.chatUrl = page.url();
		check(/\/c\//.test(state.chatUrl), `the chat has no address: ${state.chatUrl}`);
	});
	await step('regenerate the last answer', async () => {
		const block = messageBlock(2);
		await block.hover();
		await block.getByRole('button', { name: 'Regenerate', exact: true }).click();
		const again = page.getByRole('button', { name: 'Try Again' });
		if (await again.isVisible({ timeout: 3000 }).catch(() => false)) await again.click();
		await block.getByText('2/2', { exact: true }).waitFor({ timeout: 30000 });
		const regenerated = await waitAnswer(2);
		const text = normalize(await regenerated.locator('.markdown-prose').innerText());
		check(text === 'Bonjour! Ça va ? Comment puis-je vous aider ?', `the regenerated answer reads ${JSON.stringify(text)}`);
		await block.getByRole('button', { name: 'Previous message' }).click();
		await block.getByText('1/2', { exact: true }).waitFor({ timeout: 10000 });
		await block.getByRole('button', { name: 'Next message' }).click();
		await block.getByText('2/2', { exact: true }).waitFor({ timeout: 10000 });
	});
});

scenario('no_replay_marker_anywhere', ['reasoning_chat_then_regenerate'], async () => {
	await step('open the chat', async () => {
		await page.goto(state.chatUrl);
		await dismissModals();
		await waitAnswer(2);
	});
	await step('Copy on the reasoning answer', async () => {
		const block = messageBlock(1);
		await block.hover();
		const since = (await toasts()).length;
		await block.getByRole('button', { name: 'Copy', exact: true }).click();
		await waitToast(/Copying to clipboard was successful/, since);
		const copied = await page.evaluate(() => navigator.clipboard.readText());
		note(`Copy on the reasoning answer put ${JSON.stringify(copied)} on the clipboard`);
		check(!copied.includes(MARKER), `the clipboard holds a replay marker: ${JSON.stringify(copied)}`);
		check(copied.trim().endsWith('17 × 23 = **391**.'), `the clipboard holds ${JSON.stringify(copied)}`);
	});
	await step('Copy on the second answer', async () => {
		const block = messageBlock(2);
		await block.hover();
		await block.getByRole('button', { name: 'Copy', exact: true }).click();
		await page.waitForTimeout(300);
		const copied = await page.evaluate(() => navigator.clipboard.readText());
		check(copied.trim() === 'Bonjour! Ça va ? Comment puis-je vous aider ?', `the clipboard holds ${JSON.stringify(copied)}`);
	});
	await step('Edit on the reasoning answer', async () => {
		const block = messageBlock(1);
		await block.hover();
		await block.getByRole('button', { name: 'Edit', exact: true }).click();
		const boxes = block.locator('textarea');
		await boxes.first().waitFor({ timeout: 10000 });
		const visual = await boxes.evaluateAll((els) => els.map((e) => e.value));
		note(`Edit (visual editor) shows ${visual.length} text boxes: ${JSON.stringify(visual).slice(0, 400)}`);
		check(visual.some((v) => v.includes('17 × 23 = **391**.')), `no edit box holds the answer: ${JSON.stringify(visual)}`);
		check(!visual.some((v) => v.includes(MARKER)), `an edit box holds a replay marker: ${JSON.stringify(visual)}`);
		const json = block.getByRole('button', { name: /JSON/ });
		if (await json.count()) {
			await json.first().click();
			await page.waitForTimeout(300);
			const raw = await block.locator('textarea').evaluateAll((els) => els.map((e) => e.value).join('\n'));
			check(!raw.includes(MARKER), `the JSON editor holds a replay marker: ${raw.slice(0, 500)}`);
		}
		await block.locator('#close-edit-message-button').click();
	});
	const exported = async (label, pattern) => {
		const download = page.getByRole('button', { name: 'Download', exact: true }).filter({ visible: true });
		await page.getByRole('button', { name: 'Chat actions' }).click();
		await download.hover();
		const item = page.getByText(label, { exact: true }).filter({ visible: true });
		await item.waitFor({ timeout: 10000 });
		const [file] = await Promise.all([page.waitForEvent('download', { timeout: 20000 }), item.click()]);
		const saved = path.join(cfg.artifacts, `export-${Date.now()}`);
		await file.saveAs(saved);
		const text = fs.readFileSync(saved, 'utf8');
		fs.unlinkSync(saved);
		check(pattern.test(file.suggestedFilename()), `downloaded ${file.suggestedFilename()}`);
		for (let i = 0; i < 3 && (await download.count()); i++) {
			await page.keyboard.press('Escape');
			await page.waitForTimeout(300);
		}
		return { name: file.suggestedFilename(), text };
	};
	await step('export the chat as .txt', async () => {
		const { name, text } = await exported('Plain text (.txt)', /\.txt$/);
		note(`${name}: ${JSON.stringify(text).slice(0, 400)}`);
		check(text.includes('17 × 23 = **391**.') && text.includes('Comment puis-je vous aider'), `the export lacks the answers`);
		check(!text.includes(MARKER), `the .txt export holds a replay marker`);
	});
	await step('export the chat as .json', async () => {
		const { text } = await exported('Export chat (.json)', /\.json$/);
		check(text.includes('17 × 23 = **391**.'), 'the JSON export lacks the answer');
		check(!text.includes(MARKER), 'the JSON export holds a replay marker');
	});
	await step('sidebar search', async () => {
		await page.getByRole('button', { name: 'Search', exact: true }).filter({ visible: true }).first().click();
		const box = page.getByRole('combobox', { name: 'Search your workspace' }).or(page.getByPlaceholder('Search workspace…'));
		await box.first().fill('aider');
		const results = page.locator('#workspace-search-results [role="option"]');
		await results.first().waitFor({ timeout: 20000 });
		await page.waitForTimeout(500);
		const shown = await page.locator('#workspace-search-results').innerText();
		note(`search "aider" shows: ${JSON.stringify(normalize(shown)).slice(0, 300)}`);
		check(/aider/i.test(shown), `the results do not show the word: ${shown}`);
		check(!shown.includes(MARKER), `a search snippet holds a replay marker: ${shown}`);
		const preview = page.getByLabel('Result preview');
		if (await preview.count()) {
			const text = await preview.first().innerText().catch(() => '');
			check(!text.includes(MARKER), `the search preview holds a replay marker: ${text.slice(0, 300)}`);
		}
		await page.keyboard.press('Escape');
	});
});

scenario('openpipe_key_typed_in_the_editor_is_used', ['pipelines_secret_is_masked', 'reasoning_chat_then_regenerate'], async () => {
	const chatId = state.chatUrl.split('/c/')[1].split(/[?#]/)[0];
	await step('the chat is reported to OpenPipe', async () => {
		const deadline = Date.now() + 30000;
		let seen;
		while (Date.now() < deadline) {
			seen = await (await fetch(cfg.openpipeReports)).json();
			if (seen.tags.some((t) => t.chat_id === chatId)) return;
			await new Promise((r) => setTimeout(r, 500));
		}
		throw new Error(`no report for chat ${chatId} in 30 s: ${seen.attempts} attempts, reports tagged ${JSON.stringify(seen.tags.map((t) => t.chat_id))}`);
	});
});

scenario('citation_chat_shows_sources', ['admin_signs_up_and_registers_sluice'], async () => {
	await step('pick openai_responses.gpt-4.1', async () => {
		await page.goto('/');
		await dismissModals();
		await pickModel('openai_responses.gpt-4.1');
	});
	const answer = await step('ask e2e:citation latest news', async () => {
		await send('e2e:citation latest news');
		return await waitAnswer(1);
	});
	await step('the sources are shown', async () => {
		const block = messageBlock(1);
		const toggle = block.getByRole('button', { name: /^Toggle (1 source|\d+ sources)$/ });
		await toggle.first().waitFor({ timeout: 15000 });
		const label = await toggle.first().getAttribute('aria-label');
		await toggle.first().click();
		const sources = block.getByRole('button', { name: /^View source: / });
		await sources.first().waitFor({ timeout: 10000 });
		const names = await sources.evaluateAll((els) => els.map((e) => e.getAttribute('aria-label')));
		note(`citation answer: ${JSON.stringify(normalize(await answer.innerText())).slice(0, 300)}; ${label}: ${JSON.stringify(names)}`);
		check(names.length >= 1, 'no source listed');
	});
});

scenario('upstream_down_shows_a_short_message', ['admin_signs_up_and_registers_sluice'], async () => {
	const closed = `http://127.0.0.1:${cfg.closedPort}/v1`;
	const update = async (body) => {
		const r = await fetch(`${cfg.sluiceUrl}/openai_responses/valves/update`, {
			method: 'POST',
			headers: { Authorization: `Bearer ${cfg.sluiceKey}`, 'Content-Type': 'application/json' },
			body: JSON.stringify(body)
		});
		check(r.ok, `valves update -> ${r.status} ${await r.text()}`);
	};
	await step('point the manifold at a closed port', async () => {
		await update({ BASE_URL: closed, API_KEY: cfg.openaiKey });
	});
	try {
		await step('pick openai_responses.gpt-4.1', async () => {
			await page.goto('/');
			await dismissModals();
			await pickModel('openai_responses.gpt-4.1');
		});
		await step('chat while OpenAI is unreachable', async () => {
			await send('e2e:plain is anyone there?');
			const block = messageBlock(1);
			await block
				.getByText('OpenAI could not be reached; try again in a moment', { exact: false })
				.first()
				.waitFor({ timeout: 60000 });
			await page.waitForTimeout(1000);
			const text = normalize(await block.innerText());
			note(`upstream down, the answer shows: ${JSON.stringify(text)}`);
			const whole = await bodyText();
			for (const leak of [`127.0.0.1:${cfg.closedPort}`, 'os error', 'tcp connect']) {
				check(!whole.toLowerCase().includes(leak), `the page shows ${JSON.stringify(leak)}: ${text}`);
			}
		});
	} finally {
		await update({ BASE_URL: cfg.openaiBaseUrl, API_KEY: cfg.openaiKey }).catch((e) => note(`restore failed: ${e}`));
	}
});

// ---------------------------------------------------------------- run

// --only NAME: the scenarios whose name contains NAME, and those they build on.
const wanted = new Set();
const want = (name) => {
	if (wanted.has(name)) return;
	wanted.add(name);
	SCENARIOS.find((s) => s.name === name).needs.forEach(want);
};
SCENARIOS.filter((s) => !cfg.only || s.name.includes(cfg.only)).forEach((s) => want(s.name));
for (const s of SCENARIOS) {
	if (wanted.has(s.name)) await run(s);
}
await browser.close();
const ok = results.filter(Boolean).length;
if (ok < results.length) console.log(`screenshots of the failing steps: ${cfg.artifacts}`);
console.log(`${ok} passed, ${results.length - ok} failed`);
process.exit(results.length && ok === results.length ? 0 : 1);
