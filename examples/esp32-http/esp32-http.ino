// esp32-http.ino: an ESP32 hands alertd a reading with one HTTP POST,
// for networks without an MQTT broker, and asks alertd to send a mail.
//
//   POST /v1/events/greenhouse/esp32-1   temp=21.5&hum=40
//     alertd turns the form into {"hum":40,"temp":21.5} on the topic
//     greenhouse/esp32-1, and its rules read it like an MQTT reading.
//   POST /v1/mail                        to=...&subject=...&text=...
//     a mail to an address in ingress.relay_to (403 for any other).
//
// alertd answers 202 only once the request is committed, so a 202 means
// the device may forget it. 429 means this device is rate-limited: wait
// the Retry-After seconds. 503 means nothing was kept: try again later.
// With no answer at all (alertd down, Wi-Fi gone, answer lost), try again
// too. A resent reading or mail does no harm, because alertd neither mails
// twice for one alert nor queues the same mail twice in a short time.
//
// The token crosses the LAN in clear (alertd's device listener speaks
// plain HTTP): give each device its own entry in ingress.http.tokens, so
// one can be revoked without touching the others.

#include <WiFi.h>
#include <HTTPClient.h>

// ---- fill these in ------------------------------------------------------
#define WIFI_SSID     "your-ssid"
#define WIFI_PASSWORD "your-wifi-password"
#define ALERTD_URL    "http://192.168.1.10:9465"  // ingress.http.listen
#define ALERTD_TOKEN  "paste-a-token-from-ingress.http.tokens"
#define TOPIC         "greenhouse/esp32-1"        // levels: no '+', '#', "." or ".."
#define MAIL_TO       "garden@example.org"        // must be in ingress.relay_to
// -------------------------------------------------------------------------

const unsigned long READ_EVERY_MS = 60000;
const unsigned long RETRY_MS = 30000;

String pending;             // a reading alertd has not accepted yet
bool mailDue = true;        // the "started" mail, sent once per boot
unsigned long nextTry = 0;  // no request before this millis()
unsigned long lastRead = 0;
bool haveRead = false;

// Stand-ins for your sensor (DHT22, SHT31...).
float readTemperature() { return 21.5; }
float readHumidity() { return 40; }

// formEncode percent-encodes one form value byte by byte: UTF-8 text
// ("°C") arrives intact, and a '&' or '=' in a subject cannot start a
// field of its own.
String formEncode(const String& s) {
  const char* hex = "0123456789ABCDEF";
  String out;
  for (size_t i = 0; i < s.length(); i++) {
    uint8_t c = s[i];
    if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += (char)c;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// post sends one form and returns how long to wait before sending it
// again: 0 when there is nothing to resend, either because alertd took it
// or because it was refused for a reason a retry cannot fix.
unsigned long post(const char* path, const String& form) {
  HTTPClient http;
  http.begin(String(ALERTD_URL) + path);
  // alertd may take up to 15 s to commit before it answers.
  http.setTimeout(20000);
  http.addHeader("Authorization", "Bearer " ALERTD_TOKEN);
  http.addHeader("Content-Type", "application/x-www-form-urlencoded");
  const char* keep[] = {"Retry-After"};  // HTTPClient drops headers not asked for
  http.collectHeaders(keep, 1);
  int code = http.POST(form);
  String answer = code > 0 ? http.getString() : HTTPClient::errorToString(code);
  long retryAfter = http.header("Retry-After").toInt();  // whole seconds
  http.end();
  Serial.printf("POST %s -> %d %s\n", path, code, answer.c_str());

  if (code == 202) return 0;
  if (code == 429) return (retryAfter > 0 ? retryAfter : 60) * 1000UL;
  if (code == 503 || code < 0) return RETRY_MS;  // nothing kept, or no answer
  // 400, 413, 415: the request is wrong; 401: the token; 403: a recipient
  // outside relay_to. Sending it again would get the same answer.
  Serial.println("refused: fix the sketch or alertd's ingress config");
  return 0;
}

// sendMail posts /v1/mail with to, subject and text as form fields.
unsigned long sendMail(const String& to, const String& subject, const String& text) {
  String form = "to=" + formEncode(to) + "&subject=" + formEncode(subject) +
                "&text=" + formEncode(text);
  return post("/v1/mail", form);
}

void setup() {
  Serial.begin(115200);
  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
}

void loop() {
  if (!haveRead || millis() - lastRead >= READ_EVERY_MS) {
    lastRead = millis();
    haveRead = true;
    // A new reading replaces one still waiting: alertd stamps a reading
    // with the time it arrives, and an old one would alert about the past.
    // nextTry is kept, so a Retry-After is still respected.
    pending = "temp=" + String(readTemperature(), 1) +
              "&hum=" + String(readHumidity(), 0);
  }
  if (WiFi.status() != WL_CONNECTED || (long)(millis() - nextTry) < 0) {
    return;
  }
  unsigned long wait = 0;
  if (pending.length() > 0) {  // readings first: they are what alerts
    wait = post("/v1/events/" TOPIC, pending);
    if (wait == 0) pending = "";
  } else if (mailDue) {
    wait = sendMail(MAIL_TO, TOPIC " started",
                    "IP " + WiFi.localIP().toString() + ", Wi-Fi " +
                    String(WiFi.RSSI()) + " dBm.");
    if (wait == 0) mailDue = false;
  }
  nextTry = millis() + wait;
}
