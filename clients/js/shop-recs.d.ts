// Types of the shop-recs web kit (shop-recs.js), written by hand. See docs/clients.md.

/** Where the kit keeps the visitor, the event queue and the links made; localStorage by default. */
export interface KitStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Gives the signed-in customer's bearer token (the shop's OIDC JWT), or null when there is none.
 * Called before every customer request; cache the token yourself. `refresh: true` after a 401. */
export type TokenGetter = (options?: { refresh?: boolean }) => Promise<string | null>;

export interface ClientOptions {
  /** The public API's URL, e.g. "https://abc.execute-api.eu-west-1.amazonaws.com" or location.origin. */
  baseUrl: string;
  /** Default: localStorage, or memory when it cannot be used. */
  storage?: KitStorage;
  /** Default: globalThis.fetch. */
  fetch?: typeof globalThis.fetch;
  /** The token getter signIn() uses when it is given none. */
  customerToken?: TokenGetter;
}

export type EventType = "view" | "add_to_cart" | "remove_from_cart" | "click" | "search";

/** Fields an event may carry besides its type and item (as in POST /events). */
export interface EventExtra {
  quantity?: number;
  price?: number;
  currency?: string;
  session_id?: string;
  campaign_id?: string;
  /** A search event's text is properties.query. */
  properties?: Record<string, string | number | boolean>;
  /** Overrides of what the kit sets: a UUID, now, "web". */
  event_id?: string;
  timestamp?: string;
  channel?: "web" | "ios" | "android" | "store" | "email" | "push";
}

export interface Reason {
  text: string;
  items: string[];
}

export interface RecommendedItem {
  item_id: string;
  score: number | null;
  title: string;
  category: string;
  /** A decimal as a string, e.g. "21.4". */
  price: string | null;
  currency: string | null;
  image_url: string | null;
  url: string | null;
  reason: Reason;
}

/** Recommendations, popular, similar, bought-together and basket answers: a list of items. */
export interface ItemList {
  user_id?: string | null;
  item_id?: string;
  cart?: string[];
  model_version: string | null;
  personalized?: boolean;
  strategy: string;
  /** Names this answer: renderRecommendations sends it with an impression event and each click,
   * so a purchase that follows can be credited to it (docs/experiments.md). */
  recommendation_id?: string;
  items: RecommendedItem[];
}

export interface CatalogItem {
  item_id: string;
  title: string;
  category: string;
  price: string | null;
  currency: string | null;
  in_stock: boolean;
  retired: boolean;
  attributes: Record<string, unknown>;
  image_url: string | null;
  url: string | null;
  [field: string]: unknown;
}

export interface RenderOptions {
  /** Called when a card is clicked (after the click is tracked); event.preventDefault() keeps a link from opening. */
  onClick?: (item: RecommendedItem, event: MouseEvent) => void;
}

export interface Client {
  /** Queues an event; sent in a batch (20 queued, or after 2 s, or when the page is hidden). Returns its event_id. */
  track(type: EventType, itemId?: string | null, extra?: EventExtra): string;
  /** Sends what is queued now; rejects when it could not (it is then retried with backoff). */
  flush(): Promise<void>;
  /** Events queued and not yet answered for. */
  queued(): number;
  /** This device's visitor id (the visitor is made on first use). */
  visitorId(): Promise<string>;
  /** The signed-in customer, or null. */
  userId(): string | null;

  /** Customer mode from now on; links this device's visitor to the customer once (best effort). */
  signIn(userId: string, getToken?: TokenGetter): Promise<void>;
  /** Back to visitor mode with a new visitor id; what is still queued is sent first, or dropped. */
  signOut(): Promise<void>;

  /** The visitor's or the signed-in customer's recommendations. */
  recommendations(options?: { limit?: number; category?: string; exclude?: string | string[] }): Promise<ItemList>;
  /** Public and cacheable (no credentials sent), like item, similar and boughtTogether. */
  popular(options?: { limit?: number; category?: string; country?: string }): Promise<ItemList>;
  item(itemId: string): Promise<CatalogItem>;
  similar(itemId: string, options?: { limit?: number }): Promise<ItemList>;
  boughtTogether(itemId: string, options?: { limit?: number }): Promise<ItemList>;
  /** What goes with the signed-in customer's cart; throws for a visitor. */
  basket(itemIds: string[], options?: { limit?: number }): Promise<ItemList>;

  /** Renders the answer's items as cards into element (an <ol>/<ul> itself, else an <ol> inside it);
   * tracks a click event when one is clicked. Resolves to the answer. */
  renderRecommendations(element: Element, answer: ItemList | Promise<ItemList>, options?: RenderOptions): Promise<ItemList>;
}

export function createClient(options: ClientOptions): Client;

/** Any answer other than 2xx. */
export class ApiError extends Error {
  status: number;
  /** The service's error code, e.g. "forbidden". */
  code?: string;
  body: unknown;
  /** Retry-After, in seconds, when the service sent it. */
  retryAfter?: number;
}
