import { defineConfig } from 'vite';

// The page is served by the samgis API from web/dist at "/"; relative asset paths keep it working
// behind a path prefix too. `npm run dev` proxies the API to a local `samgis serve`.
export default defineConfig({
  base: './',
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: true, chunkSizeWarningLimit: 600 },
  server: {
    proxy: Object.fromEntries(['/v1', '/health'].map((p) => [p, process.env.SAMGIS_URL || 'http://127.0.0.1:8000'])),
  },
  test: { include: ['src/**/*.test.js'], environment: 'node' },
});
