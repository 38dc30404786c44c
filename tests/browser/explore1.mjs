import { chromium } from 'playwright-core';
import fs from 'fs';
const cfg = JSON.parse(fs.readFileSync(new URL('./.serve.json', import.meta.url)));
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox','--disable-gpu','--disable-quic','--no-first-run','--disable-background-networking','--disable-component-update','--disable-sync'] });
const context = await browser.newContext({ baseURL: cfg.owuiUrl, viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
page.on('console', m => { if (m.type() === 'error') console.log('console:', m.text().slice(0, 200)); });
await page.goto('/');
await page.waitForTimeout(3000);
await page.screenshot({ path: '/tmp/explore/1.png' });
console.log(page.url());
console.log((await page.locator('body').innerText()).slice(0, 500));
await browser.close();
