/**
 * Where a session keeps its position (the epoch and seq of the last message it handled), so a
 * page that reloads, or an app that restarts, resumes where it stopped instead of from the
 * device's acked cursor.
 */

export interface Position {
  epoch: string;
  seq: number;
}

/**
 * A key-value store of strings. `localStorage` is one as it is; anything with these two
 * methods will do (sync or async: IndexedDB, a file, React Native's AsyncStorage...).
 */
export interface PositionStorage {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
}

/** A storage that lives as long as the process (the default outside browsers). */
export function memoryStorage(): PositionStorage {
  const items = new Map<string, string>();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => {
      items.set(key, value);
    },
  };
}

/** The browser's `localStorage` when it is there and usable (not in Node, nor when the page may not use it). */
export function browserStorage(): PositionStorage | null {
  try {
    const g = globalThis as { localStorage?: PositionStorage; document?: unknown };
    if (g.document === undefined) return null; // (Node 22+ may have a localStorage of its own: not ours to use)
    const storage = g.localStorage; // (reading it throws where the page may not use it)
    return storage !== undefined && typeof storage.getItem === "function" ? storage : null;
  } catch {
    return null;
  }
}

const processMemory = memoryStorage();

/** `localStorage` in a browser, else a memory shared by the sessions of this process. */
export function defaultStorage(): PositionStorage {
  return browserStorage() ?? processMemory;
}

export function parsePosition(text: string | null): Position | null {
  if (!text) return null;
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== "object" || value === null) return null;
    const { epoch, seq } = value as { epoch?: unknown; seq?: unknown };
    if (typeof epoch !== "string" || !epoch || typeof seq !== "number" || !Number.isInteger(seq) || seq < 0) {
      return null;
    }
    return { epoch, seq };
  } catch {
    return null;
  }
}
