// esp32-mqtt.ino: an ESP32 publishes a reading to an MQTT broker every
// 30 s. alertd subscribes to the same broker and mails when a reading
// breaks a rule. This is alertd's main way in.
//
// Topic sensors/<DEVICE>/telemetry, payload {"temp": 21.5}. The sensor
// rules of rules.example.yaml match the filter "sensors/+/telemetry": the
// '+' level is the device, so each device is an alert of its own, and
// {{.Device}} in a mail's subject is DEVICE. greenhouse-hot reads the
// field "temp" and fires above 30; sensor-silent mails when this topic
// publishes nothing for 15 minutes. A dead device is reported even though
// it can no longer send anything itself.
//
// QoS 0: PubSubClient publishes at QoS 0 only (only its subscribe can ask
// for QoS 1). A reading sent while the Wi-Fi or the broker is down is
// lost, and Mosquitto does not, by default, keep QoS 0 messages for a
// subscriber (alertd) that is reconnecting. That is fine for telemetry:
// the next reading comes 30 s later, and the one after it resolves or
// confirms the alert.
//
// Libraries: "PubSubClient" by Nick O'Leary (Library Manager); WiFi.h
// comes with the ESP32 Arduino core.

#include <WiFi.h>
#include <PubSubClient.h>

// ---- fill these in ------------------------------------------------------
#define WIFI_SSID     "your-ssid"
#define WIFI_PASSWORD "your-wifi-password"
#define MQTT_HOST     "192.168.1.10"  // your broker (the one in alertd's mqtt.broker)
#define MQTT_PORT     1883
#define MQTT_USER     ""              // "" when the broker allows anonymous clients
#define MQTT_PASSWORD ""
#define DEVICE        "greenhouse"    // one topic level: no '/', '+' or '#'
// -------------------------------------------------------------------------

// The client id is stable (not random, as in many examples) and unique.
// A stable id lets the broker's log and ACLs name the device. If a second
// connection from this device ever opens, it replaces the stale one instead
// of piling up next to it. Two devices with the same id would knock each
// other off the broker in a loop, so build it from DEVICE.
#define CLIENT_ID "esp32-" DEVICE
#define TOPIC     "sensors/" DEVICE "/telemetry"

const unsigned long PUBLISH_EVERY_MS = 30000;
const unsigned long MAX_BACKOFF_MS = 60000;

WiFiClient wifiClient;
PubSubClient client(wifiClient);

unsigned long lastAttempt = 0;  // last connect() to the broker
unsigned long backoffMs = 0;    // pause before the next one; 0: none yet
unsigned long lastPublish = 0;
bool published = false;

// readTemperature stands for your sensor (DHT22, DS18B20, SHT31...).
// It returns NAN when the sensor could not be read.
float readTemperature() {
  return 21.5;
}

// ensureConnected (re)connects to the broker without blocking loop() for
// long. Each failure doubles the pause up to a minute, plus up to a second
// of random jitter. A broker that restarts is then not hammered by a
// whole fleet reconnecting at the same instant. A broker that refuses
// the login (state 4 or 5) is not asked a thousand times an hour.
void ensureConnected() {
  if (client.connected() || WiFi.status() != WL_CONNECTED) {
    return;  // the ESP32 core reconnects the Wi-Fi by itself
  }
  if (backoffMs != 0 && millis() - lastAttempt < backoffMs) {
    return;
  }
  lastAttempt = millis();
  // PubSubClient sends no user name when it is passed NULL.
  const char* user = strlen(MQTT_USER) ? MQTT_USER : NULL;
  const char* pass = strlen(MQTT_PASSWORD) ? MQTT_PASSWORD : NULL;
  // connect() can block for up to the library's socket timeout (15 s)
  // when the broker does not answer.
  if (client.connect(CLIENT_ID, user, pass)) {
    Serial.println("MQTT connected as " CLIENT_ID);
    backoffMs = 0;
    return;
  }
  backoffMs = backoffMs == 0 ? 1000 : min(backoffMs * 2, MAX_BACKOFF_MS);
  backoffMs += random(1000);
  // state(): -2 no TCP connection, 4 bad user or password, 5 not allowed.
  Serial.printf("MQTT connect failed, state %d; next try in %lu ms\n",
                client.state(), backoffMs);
}

void publishReading() {
  float t = readTemperature();
  if (isnan(t)) {
    // Send nothing rather than "nan", which is not JSON: alertd would
    // only count it as an invalid payload. sensor-silent still notices a
    // sensor that keeps failing.
    Serial.println("sensor read failed");
    return;
  }
  char payload[32];
  snprintf(payload, sizeof payload, "{\"temp\": %.1f}", t);
  // publish(topic, payload) is QoS 0 and not retained. A retained
  // reading would be replayed to alertd at every reconnect as if it
  // were new.
  if (client.publish(TOPIC, payload)) {
    Serial.printf("%s %s\n", TOPIC, payload);
  } else {
    Serial.println("publish failed (connection lost?)");
  }
}

void setup() {
  Serial.begin(115200);
  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  client.setServer(MQTT_HOST, MQTT_PORT);
}

void loop() {
  ensureConnected();
  // loop() sends the keep-alive pings and notices a dead connection, so
  // connected() turns false and ensureConnected() starts over. Call it
  // on every pass, and never block loop() for longer than the keep-alive
  // (15 s by default).
  client.loop();

  if (!client.connected()) {
    return;  // a reading taken now could not be sent: skip it
  }
  if (!published || millis() - lastPublish >= PUBLISH_EVERY_MS) {
    lastPublish = millis();  // unsigned subtraction survives the 49-day wrap
    published = true;
    publishReading();
  }
}
