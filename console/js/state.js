// What the console holds while it runs. Everything lives in memory only:
// nothing in storage, nothing in the URL but the page name.

/**
 * `gen` counts views (page or tenant shown, session): a load or a poll
 * started under an older one is dropped, so late answers never paint the
 * wrong tenant or page. `timers` are the polls of the current view.
 */
export const S = { session: null, global: false, tenant: null, tenants: [], page: null, gen: 0, timers: [] };
