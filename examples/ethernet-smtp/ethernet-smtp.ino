// ethernet-smtp.ino: an Arduino Uno with an Ethernet shield (W5100 or
// W5500) mails alertd's SMTP ingress when a door contact opens or closes.
//
// It speaks SMTP by hand, as you would in telnet: an Uno has no RAM to
// spare for a mail library, and alertd's ingress, on the LAN, never
// requires TLS. Every reply code is checked before the next command. A
// 4xx means "not now" (alertd busy, this device rate-limited, the mail not
// stored), so the sketch retries after a growing pause. A 5xx is a
// configuration error that repeating the mail cannot fix.
//
// Wiring: a reed switch between pin 2 and GND (an open door reads HIGH).

#include <SPI.h>
#include <Ethernet.h>

// ---- fill these in ------------------------------------------------------
#define ALERTD_IP   192, 168, 1, 10  // the machine running alertd
#define ALERTD_PORT 2525             // the port of ingress.smtp.listen
#define HELO_NAME   "cellar-door"
#define MAIL_FROM   "cellar-door@casa.lan"
// An address in ingress.relay_to (alertd passes the mail on, and its rules
// see it), or any name @ ingress.smtp.hostname (only its rules see it).
#define MAIL_TO     "garden@example.org"
// AUTH LOGIN sends user and password in base64. An Uno has no base64
// library by default, so compute them once on a computer (printf, not
// echo, whose newline would be encoded too):
//   printf 'arduino' | base64    ->  YXJkdWlubw==
//   printf 's3cret' | base64     ->  czNjcmV0
// (On an ESP32: #include <base64.h>, base64::encode(String("arduino")).)
// Leave SMTP_USER_B64 empty when ingress.smtp has no users.
#define SMTP_USER_B64 "YXJkdWlubw=="
#define SMTP_PASS_B64 "czNjcmV0"
// -------------------------------------------------------------------------

const byte DOOR_PIN = 2;
// Longer than the 2 minutes alertd may take to store a mail before it
// answers the final dot (then it says 451 itself); other replies are instant.
const unsigned long REPLY_TIMEOUT_MS = 150000;
const unsigned long FIRST_RETRY_MS = 30000;
const unsigned long MAX_RETRY_MS = 1800000;  // 30 min

// Any MAC unique on the LAN; many shields have one on a sticker.
byte mac[] = {0xDE, 0xAD, 0xBE, 0xEF, 0xFE, 0x01};
IPAddress alertd(ALERTD_IP);
EthernetClient client;

enum Result { SENT, RETRY, GIVE_UP };
int lastCode = 0;             // the code of the last reply, 0: none in time
bool reported;                // the door state alertd last accepted
unsigned long lastTry = 0, waitMs = 0;

// expect reads one reply and checks its code. A reply may take several
// lines ("250-..." on every line but the last, "250 ..." on the last), and
// only the last line ends it. The reply is echoed to Serial for debugging.
bool expect(int want) {
  char head[4];
  byte n = 0;
  unsigned long start = millis();
  while (millis() - start < REPLY_TIMEOUT_MS) {
    if (!client.available()) {
      if (!client.connected()) break;
      continue;
    }
    char c = client.read();
    Serial.write(c);
    if (c != '\n') {
      if (n < 4) head[n++] = c;
      continue;
    }
    if (n == 4 && head[3] == '-') { n = 0; continue; }  // more lines follow
    if (n < 3) break;
    lastCode = (head[0] - '0') * 100 + (head[1] - '0') * 10 + (head[2] - '0');
    return lastCode == want;
  }
  lastCode = 0;  // silence or a closed connection: try again later
  Serial.println(F("(no reply)"));
  return false;
}

// step sends one command line (none for the greeting) and checks the reply.
bool step(const __FlashStringHelper* line, int want) {
  if (line) client.println(line);  // println ends the line with CRLF, as SMTP wants
  return expect(want);
}

#define STEP(line, code) if (!step(line, code)) return lastCode / 100 == 5 ? GIVE_UP : RETRY

// converse replays the session of a mail typed by hand into telnet.
Result converse(bool closed) {
  STEP(NULL, 220);  // the greeting. 554 means this Uno is not in ingress.smtp.networks
  STEP(F("HELO " HELO_NAME), 250);
  if (sizeof(SMTP_USER_B64) > 1) {
    STEP(F("AUTH LOGIN"), 334);     // 334 VXNlcm5hbWU6 is base64 for "Username:"
    STEP(F(SMTP_USER_B64), 334);    // 334 UGFzc3dvcmQ6 is "Password:"
    STEP(F(SMTP_PASS_B64), 235);    // 535: wrong user or password
  }
  STEP(F("MAIL FROM:<" MAIL_FROM ">"), 250);  // 530: alertd wants AUTH
  STEP(F("RCPT TO:<" MAIL_TO ">"), 250);      // 550: MAIL_TO is not allowed
  STEP(F("DATA"), 354);
  client.println(F("From: " HELO_NAME " <" MAIL_FROM ">"));
  client.println(F("To: <" MAIL_TO ">"));
  client.println(closed ? F("Subject: Cellar door closed") : F("Subject: Cellar door open"));
  client.println();  // the blank line that ends the header
  // A body line that starts with "." would have to be sent as "..".
  client.print(F("The contact on pin 2 reads "));
  client.println(closed ? F("closed.") : F("open."));
  // alertd answers the final dot only once the mail is stored: after 250
  // it cannot be lost. 450: this device is rate-limited; 451: not stored.
  STEP(F("."), 250);
  step(F("QUIT"), 221);  // the mail is accepted, so this reply does not matter
  return SENT;
}

Result sendMail(bool closed) {
  if (!client.connect(alertd, ALERTD_PORT)) {
    Serial.println(F("cannot connect to alertd"));
    return RETRY;  // alertd down, restarting, or the cable is out
  }
  Result r = converse(closed);
  if (r != SENT && client.connected()) client.println(F("QUIT"));
  client.stop();
  return r;
}

void setup() {
  Serial.begin(9600);
  pinMode(DOOR_PIN, INPUT_PULLUP);
  Ethernet.init(10);  // chip select: pin 10 on the Arduino shields
  while (Ethernet.begin(mac) == 0) {  // DHCP; returns 0 when it failed
    if (Ethernet.hardwareStatus() == EthernetNoHardware) Serial.println(F("no Ethernet shield"));
    else if (Ethernet.linkStatus() == LinkOFF) Serial.println(F("no cable"));
    else Serial.println(F("no DHCP answer"));
    delay(5000);
  }
  Serial.println(Ethernet.localIP());
  reported = digitalRead(DOOR_PIN) == LOW;  // no mail at boot, only on a change
}

void loop() {
  Ethernet.maintain();  // renews the DHCP lease
  bool closed = digitalRead(DOOR_PIN) == LOW;
  delay(50);  // a reed switch bounces: trust only a reading that holds
  if (closed != (digitalRead(DOOR_PIN) == LOW)) return;
  if (closed == reported) { waitMs = 0; return; }  // nothing new (any more)
  if (millis() - lastTry < waitMs) return;

  // The state to send is always the present one. A door that opened and
  // closed again during a retry pause sends nothing.
  Result r = sendMail(closed);
  if (r == RETRY) {
    lastTry = millis();
    waitMs = waitMs == 0 ? FIRST_RETRY_MS : min(waitMs * 2, MAX_RETRY_MS);
    Serial.print(F("retrying in s: "));
    Serial.println(waitMs / 1000);
  } else {
    reported = closed;  // SENT, or GIVE_UP: a 5xx will not change by repeating it
    waitMs = 0;
    if (r == GIVE_UP) Serial.println(F("refused: check alertd's ingress.smtp"));
  }
}
