// Builds the dashboard into dist/, which `flotilla server` embeds and
// serves at /ui/ (controller/src/api/ui.rs). `npm ci && npm run build`
// rebuilds it; CI checks that the committed dist/ is what the sources build.
import { defineConfig } from 'vite';
import preact from '@preact/preset-vite';

export default defineConfig({
  base: '/ui/',
  plugins: [preact({ prefreshEnabled: false, devToolsEnabled: false })],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2020',
    // No inline data: the page's Content-Security-Policy allows only its own files.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  // `npm run dev` against a local `flotilla server --plain`.
  server: { proxy: { '/api': 'http://127.0.0.1:7440' } },
});
