/** A minimal typed event emitter. */
export class Emitter<Events extends { [K in keyof Events]: (...args: never[]) => void }> {
  private readonly listeners = new Map<keyof Events, Set<Events[keyof Events]>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Adds a listener called at most once. */
  once<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    const wrapped = ((...args: Parameters<Events[K]>) => {
      off();
      (listener as unknown as (...a: unknown[]) => void)(...args);
    }) as unknown as Events[K];
    const off = this.on(event, wrapped);
    return off;
  }

  /** Removes a listener. */
  off<K extends keyof Events>(event: K, listener: Events[K]): void {
    this.listeners.get(event)?.delete(listener);
  }

  protected emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as unknown as (...a: unknown[]) => void)(...args);
      } catch (e) {
        if (event !== 'error') this.emit('error' as K, ...([e] as unknown as Parameters<Events[K]>));
        else setTimeout(() => { throw e; }, 0);
      }
    }
  }

  protected listenerCount<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.size ?? 0;
  }
}
