/*
 * bpe_corpus: the built-in text mc_bpe_train() learns a test vocabulary
 * from when given none. Written for this project: short passages in several
 * languages and scripts, program code, numbers and emoji, so that a tiny
 * vocabulary has merges for most kinds of input the tests feed it. Changing
 * a single byte here changes the trained vocabulary, and with it the ids in
 * tests/fixtures/bpe_tokenizer_golden.json (deploy/make-bpe-golden.sh).
 */
#include "bpe_train.h"

static const char s_corpus[] =
    // English
    "The small cluster in the workshop runs a mixture of experts. Each node holds a few of the experts, and the "
    "coordinator sends every token to the two experts the router picks for it. When a node is slow, the others "
    "wait; when a node is lost, the coordinator retries the request on a replica. It's not fast, but it's cheap, "
    "and we'll learn a lot from it. They're planning to add four more boards next week, so I've ordered the "
    "cables, and I'm writing the setup notes today. He'd rather test everything twice before the demo.\n"
    "The weather was cold and bright. A fox crossed the frozen river at dawn, looked back once, and vanished "
    "between the pines. Nobody in the village saw it, except the baker, who was already awake and kneading the "
    "dough for the morning bread.\n"
    "Questions worth asking: how many tokens per second? How much memory per expert? What happens when the "
    "network drops a packet? Which of the experts are used the most, and which are almost never chosen?\n\n"
    // French
    "Le petit groupe d'ordinateurs travaille toute la nuit. Chaque machine garde quelques experts en mémoire, "
    "et le coordinateur envoie les calculs là où ils doivent aller. C'est lent, mais ça marche ! Où est la "
    "documentation ? Elle est déjà écrite, à côté du café. Les élèves préfèrent les exemples très concrets : "
    "une fenêtre, un château, une forêt, un garçon qui lit près de la cheminée.\n\n"
    // German
    "Die Straße war nass, und über den Dächern hing ein grauer Himmel. Die Müllers öffneten ihren kleinen Laden "
    "früh am Morgen. Äpfel, Birnen und Gemüse lagen ordentlich in den Kisten. Größere Rechner brauchen mehr "
    "Strom, aber die Übertragung zwischen den Knoten bleibt schnell genug für unsere Prüfungen. Schön!\n\n"
    // Spanish and Italian
    "¿Cuántos expertos caben en la memoria? ¡Más de los que pensábamos! El niño leyó la canción en voz alta, "
    "y la señora sonrió. La città è piccola, ma il caffè è buonissimo; perché non restiamo qui ancora un po'?\n\n"
    // Russian and Greek
    "Маленький кластер работает всю ночь. Каждый узел хранит несколько экспертов, а координатор отправляет им "
    "токены. Привет, мир! Это простой тест для словаря. Сегодня холодно, но солнечно.\n"
    "Καλημέρα σας! Ο μικρός υπολογιστής δουλεύει όλη τη νύχτα. Η θάλασσα είναι ήρεμη σήμερα.\n\n"
    // Chinese, Japanese, Korean
    "小型集群整夜运行。每个节点保存几个专家，协调器把每个词元发送给路由器选择的专家。你好，世界！今天天气很好，"
    "我们去公园散步吧。中文分词测试：机器学习、模型、推理、内存。\n"
    "小さなクラスタは一晩中動いています。各ノードはいくつかの専門家を持っています。こんにちは、世界！"
    "カタカナとひらがなのテストです。\n"
    "작은 클러스터가 밤새 실행됩니다. 각 노드는 몇 명의 전문가를 보관합니다. 안녕하세요, 세계! 오늘은 날씨가 좋네요.\n\n"
    // Arabic and Hindi
    "مرحبا بكم في الاختبار. الحاسوب الصغير يعمل طوال الليل.\n"
    "नमस्ते दुनिया! यह एक छोटा परीक्षण है। हर नोड कुछ विशेषज्ञ रखता है।\n\n"
    // Python
    "def route(scores, k=2):\n"
    "    \"\"\"Return the indices of the k best experts.\"\"\"\n"
    "    order = sorted(range(len(scores)), key=lambda i: -scores[i])\n"
    "    return order[:k]\n"
    "\n"
    "class Node:\n"
    "    def __init__(self, name, experts=None):\n"
    "        self.name = name\n"
    "        self.experts = experts or []  # indices held here\n"
    "\n"
    "    def __repr__(self):\n"
    "        return f\"Node({self.name!r}, {len(self.experts)} experts)\"\n"
    "\n"
    "for i in range(10):\n"
    "    if i % 2 == 0:\n"
    "        print(i, route([0.1, 0.7, 0.2]))\n\n"
    // C
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "\n"
    "static int add(int a, int b) { return a + b; }\n"
    "\n"
    "int main(int argc, char **argv) {\n"
    "\tint total = 0;\n"
    "\tfor (int i = 1; i < argc; i++) {\n"
    "\t\ttotal = add(total, atoi(argv[i]));\n"
    "\t}\n"
    "\tprintf(\"%d\\n\", total);\n"
    "\treturn total > 100 ? 1 : 0;\n"
    "}\n\n"
    // JavaScript and shell
    "const experts = nodes.map((n) => n.experts.length);\n"
    "let sum = 0;\n"
    "for (let i = 0; i < experts.length; i++) { sum += experts[i]; }\n"
    "console.log(`total=${sum}`); // arrow functions are fine\n"
    "if (sum !== 8 && sum >= 2) { throw new Error(\"unexpected count\"); }\n"
    "$ cmake -S . -B build && cmake --build build -j2\n"
    "$ curl -s http://localhost:8080/v1/chat/completions -d '{\"model\": \"tiny\"}'\n\n"
    // Numbers, dates, units
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 100 256 1024 4096 65536 1000000 3.14159 2.71828 -17 +5 1e-6 0x1F "
    "0xFF 1,000 12,50 99.9% 2024-12-31 23:59:59 08:30 v0.1.0 #3 No. 7 $19.99 €12 £8 ¥300 50km 3.5GB 120ms.\n"
    "Phone: +1 (555) 010-2030. Version 2.0.1 was released on 2025-03-14 at 09:26:53.\n\n"
    // Emoji and symbols
    "Emoji: 😀 😂 🚀 🔥 👍 👍🏽 ❤️ 🎉 🍣 🌍 ✅ ❌ ⚠️ 🤖 👨‍👩‍👧‍👦 — symbols: ∑ ∫ ≠ ≤ ≥ ∞ → ← ± × ÷ ° © ® ™ … « » “quotes” ‘single’.\n"
    "Whitespace:  two  spaces,   three,\ttabs\tand\r\nwindows line ends\r\n    indented lines\n\n\nand blank ones.\n";

const char *mc_bpe_corpus(size_t *len) {
    if (len) *len = sizeof(s_corpus) - 1;
    return s_corpus;
}
